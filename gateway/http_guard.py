"""What one connection may make the web process hold: bounded headers, no slow clients.

uvicorn's httptools protocol buffers a request's headers without a bound and
waits for them (and for a body) without a timeout: its keep-alive timer only
covers the time between requests and is reset by every byte (encode/uvicorn#157;
h11 has ``h11_max_incomplete_event_size`` but parses in Python, and has no
timeouts either). ``guarded_protocol`` returns the httptools protocol with

- a bound on the request line and headers: beyond it, 431 and the connection
  is closed, so a connection holds at most the bound and two reads (256 KiB each);
- a header timeout: from the connection's start (or a request's first byte)
  to the end of its headers, else 408 (nothing if it sent nothing) and closed;
- a body rate: while the app waits for more of a body, each window must bring
  ``MIN_BODY_BYTES_PER_S`` or the request gets 408 and the connection is closed
  (Kestrel's MinRequestBodyDataRate: a trickle of 1 byte/s is cut, a slow link is not).

``HttpGuard`` is the ASGI side: only the hosts in ALLOWED_HOSTS are answered,
and a response that starts before the request's body was read to its end (a
413, a 401, any early error) carries ``Connection: close``, so uvicorn closes
the connection instead of reading and discarding the rest of the body to keep
it alive.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, ClassVar

import httptools
import msgspec
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .errors import HttpError, error_response

logger = logging.getLogger(__name__)

# Kestrel's default minimum request body data rate.
MIN_BODY_BYTES_PER_S = 240


@dataclass(frozen=True, slots=True)
class HttpLimits:
    max_header_bytes: int
    header_timeout_s: float
    body_timeout_s: float


def guarded_protocol(limits: HttpLimits) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol held to ``limits`` (pass it as ``uvicorn.Config(http=...)``)."""
    return type("GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,), {"limits": limits})


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    limits: ClassVar[HttpLimits]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reading_headers = True
        # Bytes of the current header block: reads wholly inside it, then the parsed fields.
        self._header_bytes = 0
        self._parsed_header_bytes = 0
        self._body_bytes = 0
        self._refused = False
        self._message_began = False
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.limits.header_timeout_s, self._header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        inside_headers = self._reading_headers
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self._refused:  # a callback refused the request and answered it
                return
            msg = "Invalid HTTP request received."
            self.logger.warning(msg)
            self.send_400_response(msg)
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        if inside_headers and self._reading_headers:
            self._header_bytes += len(data)
            if self._header_bytes > self.limits.max_header_bytes:
                self._refuse(431, "headers_too_large", self._too_large_message())
                return
        cycle = self.cycle
        if (
            self._timer is None
            and cycle is not None
            and cycle.more_body
            and not cycle.response_complete
        ):
            # A body is still coming: from now on it must keep coming.
            self._body_bytes = 0
            self._arm(self.limits.body_timeout_s, self._body_timeout)

    # Parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._message_began = True
        self._reading_headers = True
        self._header_bytes = 0
        self._parsed_header_bytes = 0
        if self._timer is None:
            self._arm(self.limits.header_timeout_s, self._header_timeout)

    def on_url(self, url: bytes) -> None:
        self._parsed_header_bytes += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        # ": " and CRLF count too, as on the wire.
        self._parsed_header_bytes += len(name) + len(value) + 4
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._reading_headers = False
        self._disarm()
        if self._parsed_header_bytes > self.limits.max_header_bytes:
            self._refuse(431, "headers_too_large", self._too_large_message())
            # Stops the parser: data_received sees the refusal and stays quiet.
            raise _Refused
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._disarm()  # the body timer: the whole body is here
        super().on_message_complete()

    # Timers

    def _arm(self, delay_s: float, callback: Any) -> None:
        self._disarm()
        self._timer = self.loop.call_later(delay_s, callback)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _header_timeout(self) -> None:
        self._timer = None
        if not self._reading_headers or self.transport.is_closing():
            return
        if not self._message_began:
            # Nothing of a request arrived: an idle connection, closed without a word.
            self.transport.close()
            return
        self._refuse(408, "header_timeout", "the request's headers took too long")

    def _body_timeout(self) -> None:
        self._timer = None
        cycle = self.cycle
        if (
            self.transport.is_closing()
            or cycle is None
            or not cycle.more_body
            or cycle.response_complete
        ):
            return
        received, self._body_bytes = self._body_bytes, 0
        # A paused read is the app's doing (it is not reading yet), not the client's.
        if self.flow.read_paused or received >= MIN_BODY_BYTES_PER_S * self.limits.body_timeout_s:
            self._arm(self.limits.body_timeout_s, self._body_timeout)
            return
        self._refuse(408, "body_timeout", "the request's body arrives too slowly")

    # Refusal

    def _too_large_message(self) -> str:
        return f"the request line and headers are larger than {self.limits.max_header_bytes} bytes"

    def _refuse(self, status: int, code: str, message: str) -> None:
        """Answer ``status`` with a JSON error (unless a response started) and close."""
        self._refused = True
        self._disarm()
        cycle = self.cycle
        started = False
        if cycle is not None and not cycle.response_complete:
            started = cycle.response_started
            # The app's request ends here: its receive() says disconnect, its sends go nowhere.
            cycle.disconnected = True
            cycle.message_event.set()
        logger.info("%s %s from %s: %s", status, code, _peer(self.client), message)
        if not started and not self.transport.is_closing():
            self.transport.write(self._response(status, code, message))
        self.transport.close()

    def _response(self, status: int, code: str, message: str) -> bytes:
        body = msgspec.json.encode({"error": {"code": code, "message": message}})
        lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}".encode()]
        lines += [name + b": " + value for name, value in self.server_state.default_headers]
        lines += [
            b"content-type: application/json",
            b"content-length: " + str(len(body)).encode(),
            b"connection: close",
        ]
        return b"\r\n".join(lines) + b"\r\n\r\n" + body


class _Refused(Exception):
    """Raised in a parser callback to stop the parser after a refusal."""


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "?"


# Orchestrators probe by address (Host: <pod IP>:<port>); the answers reveal nothing.
_PROBES = frozenset({"/healthz", "/readyz"})


class HttpGuard:
    """The app, answering only ``allowed_hosts`` and closing after an answer given early.

    A Host not allowed gets 400 (JSON, ``Connection: close``), except on the health
    probes; host patterns are Starlette's: exact names, ``*.example.com`` for
    subdomains, ``*`` for any. A
    response that starts before the request's body was read to its end carries
    ``Connection: close``.

    ``__call__`` is not a coroutine function: a request that passes gets the app's
    own coroutine, so a stream open for minutes keeps no frame of ours (Starlette's
    TrustedHostMiddleware and an async wrapper: 960 bytes per open request, tracemalloc).
    """

    def __init__(self, app: ASGIApp, allowed_hosts: Sequence[str]) -> None:
        self.app = app
        hosts = [host.lower() for host in allowed_hosts]
        self._any = "*" in hosts
        self._names = frozenset(host for host in hosts if not host.startswith("*"))
        self._suffixes = tuple(host[1:] for host in hosts if host.startswith("*."))

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        if scope["type"] != "http":
            return self.app(scope, receive, send)
        host: bytes | None = None
        has_body = False
        for name, value in scope["headers"]:
            if name == b"host":
                host = value
            elif name == b"content-length":
                has_body = value.strip() != b"0"
            elif name == b"transfer-encoding":
                has_body = True
        if not self._any and not self._allowed(host) and scope["path"] not in _PROBES:
            error = HttpError(
                400,
                "unknown_host",
                "this server does not answer for that Host",
                headers={"Connection": "close"},
            )
            return error_response(error)(scope, receive, send)
        if has_body:
            return self._close_unless_read(scope, receive, send)
        return self.app(scope, receive, send)

    def _allowed(self, header: bytes | None) -> bool:
        if header is None:
            return False
        host = header.decode("latin-1").strip().lower()
        if host.startswith("["):  # an IPv6 literal keeps its brackets, as ALLOWED_HOSTS has it
            host = host.partition("]")[0] + "]"
        else:
            host = host.partition(":")[0]
        return host in self._names or host.endswith(self._suffixes)

    async def _close_unless_read(self, scope: Scope, receive: Receive, send: Send) -> None:
        read_all = False

        async def receive_and_note() -> Message:
            nonlocal read_all
            message = await receive()
            if message["type"] == "http.request" and not message.get("more_body", False):
                read_all = True
            return message

        async def send_with_close(message: Message) -> None:
            if message["type"] == "http.response.start" and not read_all:
                headers = [*message.get("headers", ()), (b"connection", b"close")]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive_and_note, send_with_close)
