"""The SSE routes served ahead of Starlette's middleware stack.

A stream lives for minutes and the coroutine frames of every layer it passed
through (error middleware, exception middleware, router, route) live with it:
about 5 KB of each stream's memory. Streams from the page's own origin skip
those layers; the handlers are the same, and their HttpErrors become the same
JSON answers. A cross-origin request (it carries ``Origin``) takes the full
stack, so CORS applies to it as to everything else.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from .errors import HttpError, error_response

Handler = Callable[[Request], Awaitable[Response]]


class StreamsFirst(Starlette):
    """Starlette, with ``streams`` (path pattern -> handler) answered before the middleware."""

    def __init__(self, *, streams: dict[str, Handler], **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._streams = [(re.compile(pattern), handler) for pattern, handler in streams.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in ("GET", "HEAD"):
            handler, params = self._match(scope)
            if handler is not None and not _has_origin(scope):
                scope["app"] = self
                scope["path_params"] = params
                try:
                    response = await handler(Request(scope, receive))
                except HttpError as exc:
                    response = error_response(exc)
                await response(scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    def _match(self, scope: Scope) -> tuple[Handler | None, dict[str, str]]:
        for pattern, handler in self._streams:
            found = pattern.fullmatch(scope["path"])
            if found is not None:
                return handler, found.groupdict()
        return None, {}


def _has_origin(scope: Scope) -> bool:
    return any(name == b"origin" for name, _ in scope["headers"])
