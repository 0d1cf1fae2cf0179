"""``GET /tasks/{id}/events``: a task's status events over Server-Sent Events, each exactly once.

A stream subscribes to the hub first, then replays the store after the
client's cursor (``Last-Event-ID``, sent by a reconnecting EventSource, or
``?after=`` for a new one), then goes live. Live events at or below the last
sent sequence number are dropped; a gap above it (an event that reached the
store but not this process's hub) sends the stream back to the store. The
stream closes after the terminal event.

Each frame is ``id: <seq>``, ``event: <state>``, ``data: <the event's JSON>``.
A cursor this task never issued gets an in-band ``reset`` event with the task's
current state, then the whole history. A finished task with nothing left to
send answers 204, which tells an EventSource to stop reconnecting.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import AsyncIterator
from typing import Any, cast

from sse_starlette import EventSourceResponse
from starlette.requests import Request
from starlette.responses import Response

from .auth import authenticate
from .hub import Hub, Subscription
from .limits import StreamLimiter
from .metrics import EVENTS_DELIVERED
from .settings import GatewaySettings
from .store import StoredEvent, TaskStore
from .tasks import owned_task
from .views import task_view

# Events read from the store per query while catching up.
REPLAY_PAGE = 500
# A stream that heard nothing for this long reads the store anyway (a safety net
# for events that reached the store while this process's live queue was down).
IDLE_RECHECK_S = 15.0


class _Cursor:
    """Where a client says it is: after sequence number ``after``, or ``unknown``."""

    __slots__ = ("after", "unknown")

    def __init__(self, request: Request) -> None:
        # The header wins: an EventSource reconnecting to a URL with ?after= sends both.
        text = request.headers.get("last-event-id")
        if text is None:
            text = request.query_params.get("after")
        self.after = 0
        self.unknown = False
        if text is None or text == "":
            return
        if text.isascii() and text.isdigit() and len(text) <= 18:
            self.after = int(text)
        else:
            self.unknown = True


def frame(event: StoredEvent) -> bytes:
    """One SSE message; the event's JSON is one line, as msgspec writes it."""
    EVENTS_DELIVERED.inc()
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (event.seq, event.state.encode(), event.body)


class _EndOnShutdown:
    """Stands in for the ``anyio.Event`` sse-starlette sets when the server shuts down.

    Setting it ends the stream's subscription, so the stream sends a retry hint
    and closes by itself instead of being cancelled mid-write.
    """

    def __init__(self) -> None:
        self.subscription: Subscription | None = None

    def set(self) -> None:
        if self.subscription is not None:
            self.subscription.end("shutdown")


async def task_events(request: Request) -> Response:
    user = authenticate(request)
    task_id = request.path_params["task_id"]
    store: TaskStore = request.app.state.store
    hub: Hub = request.app.state.hub
    settings: GatewaySettings = request.app.state.settings
    limiter: StreamLimiter = request.app.state.stream_limiter
    summary = await owned_task(request, task_id, user.user_id)
    cursor = _Cursor(request)
    reset = cursor.unknown or cursor.after > summary.last_seq
    if summary.terminal and not reset and cursor.after >= summary.last_seq:
        return Response(status_code=204)
    reset_state = task_view(summary) if reset else None
    shutdown = _EndOnShutdown()
    events = event_stream(
        task_id,
        after=0 if reset else cursor.after,
        reset_state=reset_state,
        store=store,
        hub=hub,
        retry_ms=settings.sse_retry_ms,
        shutdown=shutdown,
        expires_at=user.expires_at,
    )
    return limiter.limited(
        user.user_id,
        EventSourceResponse(
            events,
            headers={"Cache-Control": "no-cache"},
            ping=settings.sse_ping_s,
            sep="\n",
            send_timeout=settings.sse_send_timeout_s,
            shutdown_event=cast(Any, shutdown),
            shutdown_grace_period=1.0,
        ),
    )


async def event_stream(
    task_id: str,
    *,
    after: int,
    reset_state: dict[str, Any] | None,
    store: TaskStore,
    hub: Hub,
    retry_ms: int,
    shutdown: _EndOnShutdown | None = None,
    expires_at: float = math.inf,
) -> AsyncIterator[bytes]:
    """The SSE frames of ``task_id`` after sequence number ``after``, up to its terminal event.

    The stream ends at ``expires_at`` (the caller's token expiry): its reconnect must
    authenticate again.
    """
    with hub.subscribe(task_id) as subscription:
        if shutdown is not None:
            shutdown.subscription = subscription
        yield b"retry: %d\n\n" % retry_ms
        if reset_state is not None:
            data = json.dumps(reset_state, separators=(",", ":")).encode()
            yield b"event: reset\ndata: %s\n\n" % data
        last = after
        while True:
            # Catch up from the store.
            while True:
                page = await store.events_after(task_id, last, REPLAY_PAGE)
                for event in page:
                    yield frame(event)
                    last = event.seq
                    if event.terminal:
                        return
                if len(page) < REPLAY_PAGE:
                    break
            subscription.resync = False
            # Live, until a gap or a resync sends us back to the store.
            while True:
                left_s = expires_at - time.time()
                if left_s <= 0:
                    yield b": session expired\n\n"
                    return
                await subscription.wait(min(IDLE_RECHECK_S, left_s))
                if subscription.ended is not None:
                    yield b": %s, reconnect\nretry: %d\n\n" % (
                        subscription.ended.encode(),
                        retry_ms,
                    )
                    return
                events = subscription.take()
                if subscription.resync or not events:
                    break
                gap = False
                for event in events:
                    if event.seq <= last:
                        continue
                    if event.seq != last + 1:
                        gap = True
                        break
                    yield frame(event)
                    last = event.seq
                    if event.terminal:
                        return
                if gap:
                    break
