"""``GET /admin/stream``: the overview every ADMIN_SAMPLE_S and every task's changes, over SSE.

``event: overview`` carries ``GET /admin/api/overview``'s JSON, the first at
once. ``event: task`` carries a task's view (an item of ``GET /tasks``) each
time one of its events is recorded, whoever owns it: the stream subscribes to
every task on this process's hub, which the live feed already fills (no broker
consumer of its own). Events that come together are sent as one view per task,
read from the store in one query. No resume: a reconnecting page reads the
history and the task list again. It ends like the other streams: on sign-out,
on the token's expiry, at shutdown, or when it falls ADMIN_BUFFER_EVENTS behind.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import AsyncGenerator

from starlette.requests import Request
from starlette.responses import Response

from infra.database import DatabaseError

from ..auth import end_with_session
from ..hub import Hub
from ..limits import StreamLimiter
from ..openapi import Media, documented
from ..settings import GatewaySettings
from ..sse import EventStreamResponse, StreamEnd
from ..task_store import DatabaseTaskStore
from ..views import task_view
from .access import require_admin
from .overview import Overview

# Events one admin stream may fall behind before it is cut (the page reconnects and reads
# the list again): every task's events pass through it, so it holds more than a task's
# stream (SSE_BUFFER_EVENTS), about 1 MB at its fullest.
ADMIN_BUFFER_EVENTS = 4096


@documented(
    "Live overview and task changes (SSE: events overview and task)",
    responses={200: Media("text/event-stream", "overview every ADMIN_SAMPLE_S; task on changes")},
    errors=(429,),
    auth="admin",
)
async def admin_stream(request: Request) -> Response:
    user = require_admin(request)
    settings: GatewaySettings = request.app.state.settings
    limiter: StreamLimiter = request.app.state.stream_limiter
    end = StreamEnd()
    end_with_session(request, end)
    frames = admin_frames(
        request.app.state.hub,
        request.app.state.admin_overview,
        request.app.state.store,
        end=end,
        sample_s=settings.admin_sample_s,
        retry_ms=settings.sse_retry_ms,
        expires_at=user.expires_at,
    )
    response = EventStreamResponse(frames, end=end, send_timeout_s=settings.sse_send_timeout_s)
    return limiter.limited(user.user_id, response)


async def admin_frames(
    hub: Hub,
    overview: Overview,
    store: DatabaseTaskStore,
    *,
    end: StreamEnd,
    sample_s: float,
    retry_ms: int,
    expires_at: float = math.inf,
) -> AsyncGenerator[bytes, None]:
    with hub.subscribe_all(ADMIN_BUFFER_EVENTS) as subscription:
        end.subscription = subscription
        if end.reason is not None:
            return
        yield b"retry: %d\n\n" % retry_ms
        loop = asyncio.get_running_loop()
        next_overview = loop.time()
        while True:
            left_s = expires_at - time.time()
            if left_s <= 0:
                yield b": session expired\n\n"
                return
            if loop.time() >= next_overview:
                next_overview = loop.time() + sample_s
                try:
                    yield b"event: overview\ndata: %s\n\n" % _json(await overview.latest())
                except DatabaseError:  # the next one may come; the page keeps the last
                    yield b": overview unavailable: the store did not answer\n\n"
            await subscription.wait(min(max(0.0, next_overview - loop.time()), left_s))
            if subscription.ended is not None:
                yield b": %s, reconnect\nretry: %d\n\n" % (subscription.ended.encode(), retry_ms)
                return
            events = subscription.take()
            if not events:
                continue
            # One view per task, in the order of each task's latest event.
            order = list(dict.fromkeys(event.task_id for event in reversed(events)))[::-1]
            try:
                found = {task.task_id: task for task in await store.get_tasks(order)}
            except DatabaseError:
                # Missed changes: the page reads the list again when it reconnects.
                yield b": store unavailable, reconnect\nretry: %d\n\n" % retry_ms
                return
            for task_id in order:
                if (summary := found.get(task_id)) is not None:
                    yield b"event: task\ndata: %s\n\n" % _json(task_view(summary))


def _json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()
