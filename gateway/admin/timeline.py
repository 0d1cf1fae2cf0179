"""``GET /admin/api/tasks/{id}/timeline``: a task and every event recorded for it, oldest first.

Each event as its publisher sent it, with the worker that published it (None for
the gateway's own events: accepted, cancelled, replayed). ``retry_of`` and
``retried_by`` link a task and its retry (gateway/admin/retry.py).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from infra.database import Database
from workers.messages import StatusEvent, event_decoder

from .. import task_inputs
from ..errors import HttpError
from ..openapi import documented
from ..store import TaskStore
from ..views import task_view, with_urls
from .access import require_admin
from .api_types import TimelineView

# Events read per query; a task's whole history is read (progress reports are bounded by
# the workers' PROGRESS_INTERVAL_S), up to MAX_EVENTS.
_PAGE = 1_000
MAX_EVENTS = 20_000
FIELDS = (
    "event_id",
    "state",
    "attempt",
    "timestamp",
    "worker",
    "percent",
    "message",
    "error",
    "result",
    "retry_in_ms",
    "run_at",
)


@documented(
    "A task and every event recorded for it, oldest first",
    responses={200: TimelineView},
    errors=(404,),
    auth="admin",
)
async def task_timeline(request: Request) -> JSONResponse:
    require_admin(request)
    task_id = request.path_params["task_id"]
    store: TaskStore = request.app.state.store
    summary = await store.get_task(task_id)
    if summary is None:
        raise HttpError(404, "not_found", f"no task {task_id!r}")
    events: list[dict[str, Any]] = []
    last = 0
    while len(events) < MAX_EVENTS:
        page = await store.events_after(task_id, last, _PAGE)
        events += (event_view(event_decoder.decode(stored.body)) for stored in page)
        if len(page) < _PAGE:
            break
        last = page[-1].seq
    database: Database = request.app.state.database
    kept = await database.read(lambda tx: task_inputs.get(tx, task_id))
    retried_by = await database.read(lambda tx: task_inputs.retry_of(tx, task_id))
    return JSONResponse(
        {
            "task": task_view(summary),
            "events": events,
            "retry_of": kept.retry_of if kept is not None else None,
            "retried_by": retried_by,
        }
    )


def event_view(event: StatusEvent) -> dict[str, Any]:
    """The event's fields; a result's output files with their ``url``, as in the task view."""
    view = {name: getattr(event, name) for name in FIELDS}
    view["result"] = with_urls(event.result)
    return view
