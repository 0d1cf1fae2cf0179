"""Errors raised by the RPC layer.

    RpcError
    ├── BrokerUnavailable      the broker cannot be reached, the channel was lost, or it
    │                          refused a publish (a full queue): try again later
    ├── BrokerRefused          the broker refused the request with a code and its text (403
    │                          ACCESS_REFUSED, 404 NOT_FOUND, 406 PRECONDITION_FAILED, ...):
    │                          configuration or permission, retrying does not help
    ├── RpcClosed              the client was closed while the call was pending
    ├── RpcTimeout             no reply within the caller's timeout
    ├── RpcNoServer            nobody consumes the method's queue (the request was returned)
    └── RemoteError            the server answered with an error reply
        ├── BadRequest         the request body was malformed or failed validation
        └── UnknownMethod      the server has no handler for the method

ServiceError is what a handler raises to send a typed, client-visible error;
any other exception becomes an opaque ``InternalError`` reply and is logged.
"""

from __future__ import annotations


class RpcError(Exception):
    """Base class of every error raised by :mod:`rpc`."""


class BrokerUnavailable(RpcError):
    """The broker cannot be reached, or the connection to it was lost."""


class BrokerRefused(RpcError):
    """The broker refused a declaration, a permission or a resource: ``code`` and its ``text``."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"the broker refused the request: {code} {text}")
        self.code = code
        self.text = text


class RpcClosed(RpcError):
    """The client was closed while the call was pending."""


class RpcTimeout(RpcError):
    """No reply arrived within the caller's timeout."""


class RpcNoServer(RpcError):
    """The request was returned unroutable: no server consumes the method."""


class RemoteError(RpcError):
    """The server answered with an error reply."""

    def __init__(self, type: str, message: str) -> None:
        super().__init__(f"{type}: {message}")
        self.type = type
        self.message = message

    @classmethod
    def from_reply(cls, type: str, message: str) -> RemoteError:
        """Build the most specific subclass for an error reply's type."""
        specific = {"BadRequest": BadRequest, "UnknownMethod": UnknownMethod}.get(type, cls)
        return specific(type, message)


class BadRequest(RemoteError):
    """The server could not decode or validate the request."""


class UnknownMethod(RemoteError):
    """The server has no handler for the requested method."""


class ServiceError(Exception):
    """Raised by a handler to send an error reply whose type and message the caller sees.

    The reply's type is the subclass name, so ``class UnknownSku(ServiceError)``
    reaches the caller as ``RemoteError(type="UnknownSku", ...)``.
    """
