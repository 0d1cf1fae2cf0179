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
import logging
import weakref
from collections.abc import AsyncGenerator, Mapping

from starlette.types import Message, Receive, Scope, Send

from infra.background import cancel_and_wait

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
            await cancel_and_wait(watcher)
            await self._frames.aclose()

    async def _watch_disconnect(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self._end.end("disconnect")


class SendGuard:
    """Cancels its task when one of its writes has not finished within ``timeout_s``.

    A stream writes a frame per event; ``asyncio.timeout`` around each write cost a
    timer, its heap entry and a context object per frame, and a timer per stream
    holds memory. Here a write only notes when it started; one task per event loop
    (``_StallWatch``) looks at the writes in progress every CHECK_EVERY_S.
    """

    __slots__ = ("_sending_since", "_task", "_timeout_s", "_watch", "timed_out")

    def __init__(self, timeout_s: float) -> None:
        self._task = asyncio.current_task()
        self._timeout_s = timeout_s
        self._sending_since = 0.0
        self._watch = _StallWatch.of(asyncio.get_running_loop())
        self._watch.live += 1
        self.timed_out = False

    async def send(self, send: Send, message: Message) -> None:
        watch = self._watch
        self._sending_since = watch.loop.time()
        watch.sending.add(self)
        try:
            await send(message)
        finally:
            watch.sending.discard(self)

    def _check(self, now: float) -> None:
        if now - self._sending_since >= self._timeout_s and self._task is not None:
            self.timed_out = True
            self._watch.sending.discard(self)
            self._task.cancel()

    def uncancel(self) -> bool:
        """After a CancelledError: True if this guard caused it (and it is taken back)."""
        if not self.timed_out or self._task is None:
            return False
        return self._task.uncancel() == 0

    def close(self) -> None:
        self._watch.sending.discard(self)
        self._watch.live -= 1


# How often the writes in progress are checked: a stuck write ends within its bound plus this.
CHECK_EVERY_S = 1.0


class _StallWatch:
    """The writes in progress on one event loop, checked by a task that runs while any
    stream is open."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.sending: set[SendGuard] = set()
        self.live = 0
        self._task = loop.create_task(self._run(), name="sse-stall-watch")

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> _StallWatch:
        watch = _WATCHES.get(loop)
        if watch is None or watch._task.done():
            watch = _WATCHES[loop] = cls(loop)
        return watch

    async def _run(self) -> None:
        # Started by the first guard, so live is above 0; it ends a check after the last.
        while self.live > 0:
            await asyncio.sleep(CHECK_EVERY_S)
            now = self.loop.time()
            for guard in list(self.sending):
                guard._check(now)


_WATCHES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _StallWatch] = (
    weakref.WeakKeyDictionary()
)
