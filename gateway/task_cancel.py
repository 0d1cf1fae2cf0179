"""``DELETE /tasks/{id}``: cancel a task (its owner, or an admin).

One store transaction decides (``workers.task_records.cancel``): a task no
worker runs ends ``cancelled`` there and then, recorded here as its terminal
event and as its outcome, so no copy of it will run (a delayed one leaves the
outbox too); a running task is asked
to stop, and its worker publishes ``cancelled`` once it has (or the outcome
it reached first). A finished task is 409.

Answers: 200 with the cancelled task; 202 ``{"state": "running",
"cancel": "requested"}`` while its worker stops it; 404 for a task the caller
may not see; 409 for a finished one.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Literal

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse

from infra.database import Database, Transaction, Work
from workers import task_records
from workers.messages import StatusEvent, encoder, new_event

from .announce import announce_recorded
from .auth import authenticate
from .errors import HttpError
from .metrics import TASKS_FINISHED, kind_label
from .openapi import documented
from .outbox import cancel_unsent
from .store import StoredEvent, TaskStore
from .task_store import record_events
from .views import TaskView, task_view

logger = logging.getLogger(__name__)


class CancelRequested(msgspec.Struct, frozen=True):
    """202: the task's worker was asked to stop it; its stream shows the outcome."""

    task_id: str
    state: Literal["running"]
    cancel: Literal["requested"]


class TaskGone(msgspec.Struct, frozen=True):
    """200 for a task cancelled and already past its retention (TASK_RETENTION_S=0)."""

    task_id: str
    state: Literal["cancelled"]


class _Finished(Exception):
    """The task reached a terminal state first: nothing of the cancel is kept."""


@documented(
    "Cancel a task",
    responses={200: (TaskView, TaskGone), 202: CancelRequested},
    errors=(404, 409),
)
async def cancel_task(request: Request) -> JSONResponse:
    user = authenticate(request)
    task_id = request.path_params["task_id"]
    store: TaskStore = request.app.state.store
    summary = await store.get_task(task_id)
    if summary is None or (summary.owner != user.user_id and not user.admin):
        raise HttpError(404, "not_found", f"no task {task_id!r}")
    if summary.terminal:
        raise _conflict(summary.task_id, summary.state)
    event = new_event(
        summary.kind, task_id, "cancelled", summary.attempt, error=f"cancelled by {user.user_id}"
    )
    database: Database = request.app.state.database
    try:
        stored = await database.write(_cancelling(event))
    except _Finished:
        latest = await store.get_task(task_id)
        raise _conflict(task_id, latest.state if latest is not None else "finished") from None
    if stored is None:
        requested = CancelRequested(task_id=task_id, state="running", cancel="requested")
        return JSONResponse(msgspec.to_builtins(requested), status_code=202)
    TASKS_FINISHED.labels(kind_label(event.kind), "cancelled").inc()
    await announce_recorded(request.app.state.publisher, stored)
    cancelled = await store.get_task(task_id)
    if cancelled is None:  # past its retention already (TASK_RETENTION_S=0) and removed
        return JSONResponse(msgspec.to_builtins(TaskGone(task_id=task_id, state="cancelled")))
    return JSONResponse(task_view(cancelled))


def _cancelling(event: StatusEvent) -> Work[StoredEvent | None]:
    """The cancel's transaction: the recorded ``cancelled`` event, or None if a worker runs
    the task (it is asked to stop); _Finished (rolled back) if the task ended first."""
    holder = f"gateway-cancel:{uuid.uuid4().hex}"
    body = encoder.encode(event)

    async def cancel(tx: Transaction) -> StoredEvent | None:
        result = await task_records.cancel(tx, event, holder=holder, now_s=time.time())
        if result == "requested":
            return None
        if result == "finished":
            raise _Finished
        # A delayed task not due yet is never published (one that is, the worker skips).
        await cancel_unsent(tx, event.task_id)
        (recorded,) = await record_events(tx, [(event, body)])
        if not isinstance(recorded, StoredEvent):  # a terminal event not from a worker's outcome
            raise _Finished
        return recorded

    return cancel


def _conflict(task_id: str, state: str) -> HttpError:
    return HttpError(409, "finished", f"task {task_id!r} already ended {state}", state=state)
