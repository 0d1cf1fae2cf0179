"""A ``text/event-stream`` response with one helper task per stream.

sse-starlette runs four tasks per stream in an anyio task group (sender,
pinger, shutdown listener, disconnect listener): about 17 KB of a stream's
48 KB measured by bench/sse.py. Here the frames come from one async iterator
that also writes the heartbeats (it knows when it has been idle), the response
sends them from the request's own task, and one small task waits for the
client to go away. Shutdown reaches a stream through the hub (``Hub.end_all``,
called from ``gateway.shutdown``), so no per-stream listener is needed for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Mapping

from starlette.types import Message, Receive, Scope, Send

from .hub import Subscription

logger = logging.getLogger(__name__)

HEADERS = {
    "content-type": "text/event-stream; charset=utf-8",
    # Nothing between the gateway and the browser may cache or buffer a stream.
    "cache-control": "no-cache",
    "x-accel-buffering": "no",
}


class StreamEnd:
    """Lets the response end a stream's subscription (the client went away) before or
    after the stream has subscribed."""

    def __init__(self) -> None:
        self.subscription: Subscription | None = None
        self.reason: str | None = None

    def end(self, reason: str) -> None:
        self.reason = reason
        if self.subscription is not None:
            self.subscription.end(reason)


class EventStreamResponse:
    """Send ``frames`` (complete SSE frames, bytes) as they come; stop when they end,
    when the client goes away (it ends the stream through ``end``), or when a write does
    not finish within ``send_timeout_s`` (a client that stopped reading)."""

    def __init__(
        self,
        frames: AsyncGenerator[bytes, None],
        *,
        end: StreamEnd,
        send_timeout_s: float,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self._frames = frames
        self._end = end
        self._send_timeout_s = send_timeout_s
        self._headers = {**HEADERS, **(headers or {})}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw_headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in self._headers.items()]
        await send({"type": "http.response.start", "status": 200, "headers": raw_headers})
        if scope.get("method") == "HEAD":
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        watcher = asyncio.create_task(self._watch_disconnect(receive))
        try:
            async for frame in self._frames:
                await self._send(
                    send, {"type": "http.response.body", "body": frame, "more_body": True}
                )
            await self._send(send, {"type": "http.response.body", "body": b"", "more_body": False})
        except (TimeoutError, OSError) as exc:
            # Too slow or gone: it reconnects with Last-Event-ID and catches up from the store.
            logger.info("ending a stream: %s", type(exc).__name__)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            await self._frames.aclose()

    async def _send(self, send: Send, message: Message) -> None:
        async with asyncio.timeout(self._send_timeout_s):
            await send(message)

    async def _watch_disconnect(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self._end.end("disconnect")
