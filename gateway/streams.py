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
from collections.abc import AsyncGenerator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from .auth import authenticate, end_with_session
from .hub import Hub
from .limits import StreamLimiter
from .metrics import EVENTS_DELIVERED
from .openapi import Media, documented
from .settings import GatewaySettings
from .sse import EventStreamResponse, StreamEnd
from .store import StoredEvent, TaskStore
from .tasks import owned_task
from .views import task_view

# Events read from the store per query while catching up.
REPLAY_PAGE = 500
# A stream that heard nothing for this long reads the store anyway (a safety net
# for events that reached the store while this process's live queue was down).
IDLE_RECHECK_S = 60.0


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


@documented(
    "A task's events as they happen (SSE; resumes after Last-Event-ID)",
    responses={
        200: Media("text/event-stream", "One SSE message per event"),
        204: None,
    },
    errors=(404, 429),
    query={"after": str},
    headers={"Last-Event-ID": str},
)
async def task_events(request: Request) -> Response:
    user = authenticate(request)
    task_id = request.path_params["task_id"]
    store: TaskStore = request.app.state.store
    hub: Hub = request.app.state.hub
    settings: GatewaySettings = request.app.state.settings
    limiter: StreamLimiter = request.app.state.stream_limiter
    summary = await owned_task(request, task_id, user)
    cursor = _Cursor(request)
    reset = cursor.unknown or cursor.after > summary.last_seq
    if summary.terminal and not reset and cursor.after >= summary.last_seq:
        return Response(status_code=204)
    end = StreamEnd()
    end_with_session(request, end)
    frames = event_stream(
        task_id,
        after=0 if reset else cursor.after,
        reset_state=task_view(summary) if reset else None,
        store=store,
        hub=hub,
        retry_ms=settings.sse_retry_ms,
        ping_s=settings.sse_ping_s,
        end=end,
        expires_at=user.expires_at,
    )
    response = EventStreamResponse(frames, end=end, send_timeout_s=settings.sse_send_timeout_s)
    return limiter.limited(user.user_id, response)


async def event_stream(
    task_id: str,
    *,
    after: int,
    reset_state: dict[str, Any] | None,
    store: TaskStore,
    hub: Hub,
    retry_ms: int,
    ping_s: float = 15.0,
    end: StreamEnd | None = None,
    expires_at: float = math.inf,
) -> AsyncGenerator[bytes, None]:
    """The SSE frames of ``task_id`` after sequence number ``after``, up to its terminal event.

    A heartbeat comment goes out after ``ping_s`` without a frame. The stream ends
    at ``expires_at`` (the caller's token expiry): its reconnect must authenticate
    again.
    """
    with hub.subscribe(task_id) as subscription:
        if end is not None:
            end.subscription = subscription
            if end.reason is not None:
                return
        yield b"retry: %d\n\n" % retry_ms
        if reset_state is not None:
            data = json.dumps(reset_state, separators=(",", ":")).encode()
            yield b"event: reset\ndata: %s\n\n" % data
        last = after
        while True:
            # Catch up from the store, to its latest event: a terminal one ends the stream,
            # one with events after it (a dead task replayed, gateway/store.py) does not.
            ended = False
            while True:
                page = await store.events_after(task_id, last, REPLAY_PAGE)
                for event in page:
                    yield frame(event)
                    last = event.seq
                    ended = event.terminal
                if len(page) < REPLAY_PAGE:
                    break
            if ended:
                return
            subscription.resync = False
            recheck_at = time.monotonic() + IDLE_RECHECK_S
            # Live, until a gap, a resync or the idle recheck sends us back to the store.
            while True:
                left_s = expires_at - time.time()
                if left_s <= 0:
                    yield b": session expired\n\n"
                    return
                await subscription.wait(min(ping_s, left_s))
                if subscription.ended is not None:
                    yield b": %s, reconnect\nretry: %d\n\n" % (
                        subscription.ended.encode(),
                        retry_ms,
                    )
                    return
                events = subscription.take()
                if subscription.resync:
                    break
                if not events:
                    yield b": ping\n\n"
                    if time.monotonic() >= recheck_at:
                        break
                    continue
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
