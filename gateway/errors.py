"""HTTP errors as JSON: every 4xx and 5xx the gateway sends has a body that says what went wrong.

The body is ``{"error": {"code": "...", "message": "..."}}``; ``code`` is stable
for programs, ``message`` is for people, and validation errors add ``path``.
Errors of lower layers that handlers let through get the same shape here: the
store's ``StoreUnavailable`` is a 503 ``store_unavailable`` with Retry-After,
the object store failing (``StorageError``) a 503 ``storage_unavailable``;
the broker refusing a declaration or a permission (``BrokerRefused``: 406
PRECONDITION_FAILED, 403 ACCESS_REFUSED, ...) is a 500 ``broker_refused`` with
the broker's own text, since retrying will not help until the configuration changes.
A client leaving mid-request (starlette's ``ClientDisconnect``) is one info line.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match, Route

from infra.storage import StorageError
from rpc.errors import BrokerRefused

from .store import StoreUnavailable

logger = logging.getLogger(__name__)

# How long a client should wait before retrying a 503.
RETRY_AFTER_S = 1


class HttpError(Exception):
    """Raised by handlers; answered as a JSON error response."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        **details: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})
        self.details = details


def unavailable(message: str) -> HttpError:
    """503 with Retry-After: the broker (or the store) cannot take the request now."""
    return HttpError(503, "unavailable", message, headers={"Retry-After": str(RETRY_AFTER_S)})


class ErrorDetail(msgspec.Struct, frozen=True):
    """What went wrong; some errors add fields (``path``: the bad field, ``state``: the task's)."""

    code: str
    message: str


class ErrorBody(msgspec.Struct, frozen=True):
    """Every 4xx and 5xx JSON body."""

    error: ErrorDetail


def error_response(error: HttpError) -> JSONResponse:
    body = {"error": {"code": error.code, "message": error.message, **error.details}}
    return JSONResponse(body, status_code=error.status, headers=error.headers)


async def handle_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HttpError)
    return error_response(exc)


async def handle_starlette_error(request: Request, exc: Exception) -> Response:
    """Starlette's own 404 and 405 in the same JSON shape."""
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    headers = dict(exc.headers or {})
    if exc.status_code == 405 and (allowed := _allowed_methods(request)):
        headers["Allow"] = allowed
    return error_response(HttpError(exc.status_code, code, str(exc.detail), headers=headers))


def _allowed_methods(request: Request) -> str:
    """Every method the path serves, for a 405's ``Allow`` (RFC 9110 15.5.6).

    Starlette answers with the methods of the first route the path matched, and a path
    such as ``/session`` has one route per method: ``PUT /session`` was told only ``POST``.
    """
    methods: set[str] = set()
    for route in getattr(request.app, "routes", ()):
        if isinstance(route, Route) and route.methods:
            match, _ = route.matches(request.scope)
            if match is not Match.NONE:
                methods |= route.methods
    return ", ".join(sorted(methods))


async def handle_store_unavailable(request: Request, exc: Exception) -> Response:
    """The store cannot take the write now: nothing was stored, the client may retry."""
    retry = {"Retry-After": str(RETRY_AFTER_S)}
    return error_response(HttpError(503, "store_unavailable", str(exc), headers=retry))


async def handle_storage_error(request: Request, exc: Exception) -> Response:
    """The object store failed (unreachable, refused): nothing was accepted; retry later."""
    logger.warning("%s %s: %s", request.method, request.url.path, exc)
    retry = {"Retry-After": str(RETRY_AFTER_S)}
    return error_response(HttpError(503, "storage_unavailable", str(exc), headers=retry))


async def handle_broker_refused(request: Request, exc: Exception) -> Response:
    """The broker refused what this gateway asked: its configuration and the broker's differ."""
    assert isinstance(exc, BrokerRefused)
    logger.error("%s %s: %s", request.method, request.url.path, exc)
    error = HttpError(500, "broker_refused", exc.text, reply_code=exc.code)
    return error_response(error)


async def handle_client_disconnect(request: Request, exc: Exception) -> Response:
    """The client left mid-body (an aborted upload): routine, so one info line, no traceback.

    Nobody reads the response; the handler's own cleanup already ran as the error passed.
    """
    client = request.client.host if request.client else "?"
    logger.info("%s %s: client left mid-request (%s)", request.method, request.url.path, client)
    return Response(status_code=400)


async def handle_internal_error(request: Request, exc: Exception) -> Response:
    """Anything unexpected: the same JSON shape, no details (they stay in the server's log,
    which Starlette's error middleware writes when it re-raises)."""
    return error_response(HttpError(500, "internal_error", "internal error"))


EXCEPTION_HANDLERS = {
    # Exception: Starlette answers with it at the outermost layer, for whatever escapes.
    Exception: handle_internal_error,
    HttpError: handle_http_error,
    HTTPException: handle_starlette_error,
    StoreUnavailable: handle_store_unavailable,
    StorageError: handle_storage_error,
    BrokerRefused: handle_broker_refused,
    ClientDisconnect: handle_client_disconnect,
}
