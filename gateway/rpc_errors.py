"""What an RPC failure means to an HTTP client."""

from __future__ import annotations

from rpc.errors import (
    BadRequest,
    BrokerRefused,
    BrokerUnavailable,
    RemoteError,
    RpcClosed,
    RpcError,
    RpcNoServer,
    RpcTimeout,
    UnknownMethod,
)

from .errors import HttpError, unavailable


def http_error(exc: RpcError) -> HttpError:
    """504 for a timeout; 503 when no server or no broker; 4xx for the service's own errors.

    The broker refusing the call (BrokerRefused) is a 500 naming its reply code and text.

    A remote ``InternalError`` (the service failed) is a 502: the request was fine.
    """
    if isinstance(exc, RpcTimeout):
        return HttpError(504, "rpc_timeout", str(exc))
    if isinstance(exc, RpcNoServer):
        return unavailable(f"no server for this method right now: {exc}")
    if isinstance(exc, BrokerUnavailable | RpcClosed):
        return unavailable(str(exc))
    if isinstance(exc, BrokerRefused):  # e.g. 403: this gateway's user may not do that
        return HttpError(500, "broker_refused", exc.text, reply_code=exc.code)
    if isinstance(exc, UnknownMethod):
        return HttpError(404, "unknown_method", exc.message)
    if isinstance(exc, BadRequest):
        return HttpError(422, "invalid_params", exc.message)
    if isinstance(exc, RemoteError):
        if exc.type == "InternalError":
            return HttpError(502, "service_failed", exc.message)
        return HttpError(422, exc.type, exc.message)
    return HttpError(502, "rpc_failed", str(exc))
