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
        guard = SendGuard(self._send_timeout_s)
        try:
            async for frame in self._frames:
                await guard.send(
                    send, {"type": "http.response.body", "body": frame, "more_body": True}
                )
            await guard.send(send, {"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not guard.uncancel():
                raise
            # Too slow: it reconnects with Last-Event-ID and catches up from the store.
            logger.info("ending a stream: a write took over %g s", self._send_timeout_s)
        except OSError as exc:
            logger.info("ending a stream: %s", type(exc).__name__)
        finally:
            guard.close()
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            await self._frames.aclose()

    async def _watch_disconnect(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self._end.end("disconnect")


class SendGuard:
    """Cancels the task whose ``send`` has not finished within ``timeout_s``.

    A stream writes a frame per event; ``asyncio.timeout`` around each write cost a
    timer, its heap entry and a context object per frame. Here one bare timer per
    stream is armed at a write and, when it fires, re-armed only if a write is in
    progress: a stream that writes often arms it about once per ``timeout_s``.
    """

    __slots__ = ("_loop", "_sending_since", "_task", "_timeout_s", "_timer", "timed_out")

    def __init__(self, timeout_s: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        self._timeout_s = timeout_s
        self._sending_since: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.timed_out = False

    async def send(self, send: Send, message: Message) -> None:
        self._sending_since = self._loop.time()
        if self._timer is None:
            self._timer = self._loop.call_later(self._timeout_s, self._check)
        try:
            await send(message)
        finally:
            self._sending_since = None

    def _check(self) -> None:
        self._timer = None
        if self._sending_since is None:
            return  # idle: the next write arms it again
        waited = self._loop.time() - self._sending_since
        if waited < self._timeout_s:
            self._timer = self._loop.call_later(self._timeout_s - waited, self._check)
        elif self._task is not None:
            self.timed_out = True
            self._task.cancel()

    def uncancel(self) -> bool:
        """After a CancelledError: True if this guard caused it (and it is taken back)."""
        if not self.timed_out or self._task is None:
            return False
        return self._task.uncancel() == 0

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
