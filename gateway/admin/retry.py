"""``POST /tasks/{id}/retry``: run a task that ended failed, dead or cancelled again, as a new task.

A task has one outcome (the workers' outcome log and the store keep exactly
one): a retry does not reopen it. It is a new task with a new id, the same
kind, priority and payload (``gateway/task_inputs.py`` kept them), owned by
the same user, accepted like an upload: its ``queued`` event, its input and its
outbox entry in one transaction. The original keeps its outcome; the retry's
first event says whose retry it is, and ``task_inputs`` links them. A task is
retried once: asked again (a double click, two admins), the answer names the
same retry; to run it a third time, retry the retry.

An upload's file is kept under its task's id and goes with that task at its
retention, so a payload's ``file`` under the original's prefix is copied to the
retry's first and the payload names the copy.

Its owner or an admin may retry a task; for anyone else it does not exist (404).
An owner's retry counts against ``TASKS_IN_FLIGHT_PER_USER`` as an upload does (429).
Answers 202 ``{"task_id", "retry_of"}``; 409 ``not_finished`` (or
``succeeded``) for a task that did not fail, ``no_input`` for one whose input
was not kept (accepted elsewhere, or before this version).
"""

from __future__ import annotations

import time

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse

from infra.database import Database, Transaction
from infra.storage import ObjectMissing, Storage
from workers.messages import TaskMessage, encoder, new_event, new_task_id, task_decoder

from .. import task_inputs
from ..announce import announce_recorded, to_announce
from ..auth import authenticate
from ..bodies import decode_json, read_body
from ..errors import RETRY_AFTER_S, HttpError
from ..openapi import documented
from ..outbox import OutboxFull, add_to_outbox, outbox_full, task_entry
from ..outbox_relay import OutboxRelay
from ..settings import GatewaySettings
from ..store import StoredEvent, TaskStore
from ..task_store import DatabaseTaskStore, record_events
from ..views import status_url
from .api_types import Retried

RETRYABLE = frozenset({"failed", "dead", "cancelled"})


class RetryRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """No options yet: a retry runs as the original did."""


_request = msgspec.json.Decoder(RetryRequest)


class _Retried(Exception):
    """Another request retried the task first: its retry is ``task_id``."""

    def __init__(self, task_id: str) -> None:
        self.task_id = task_id


@documented(
    "Run a failed, dead or cancelled task again, as a new task (its owner or an admin)",
    responses={202: Retried},
    body=RetryRequest,
    errors=(404, 409, 429),
)
async def retry_task(request: Request) -> JSONResponse:
    user = authenticate(request)
    body = await read_body(request)
    if body.strip():
        decode_json(body, _request)
    task_id = request.path_params["task_id"]
    store: TaskStore = request.app.state.store
    database: Database = request.app.state.database
    summary = await store.get_task(task_id)
    if summary is None or (summary.owner != user.user_id and not user.admin):
        raise HttpError(404, "not_found", f"no task {task_id!r}")
    if summary.state not in RETRYABLE:
        code = "succeeded" if summary.state == "succeeded" else "not_finished"
        raise HttpError(
            409,
            code,
            f"task {task_id!r} is {summary.state}: only a failed, dead or"
            " cancelled task is retried",
            state=summary.state,
        )
    earlier = await database.read(lambda tx: task_inputs.retry_of(tx, task_id))
    if earlier is not None:
        return _accepted(earlier, task_id)
    settings: GatewaySettings = request.app.state.settings
    if not user.admin:  # an operator's retry is not the user's load
        await _check_in_flight(
            request.app.state.store, user.user_id, settings.tasks_in_flight_per_user
        )
    kept = await database.read(lambda tx: task_inputs.get(tx, task_id))
    if kept is None:
        raise HttpError(409, "no_input", f"task {task_id!r} was not accepted here: no input kept")
    original = task_decoder.decode(kept.body)
    new_id = new_task_id()
    storage: Storage = request.app.state.storage
    try:
        payload = await _copy_file(storage, original, new_id)
    except ObjectMissing:
        raise HttpError(409, "no_input", f"the file of task {task_id!r} is gone") from None
    message = TaskMessage(
        task_id=new_id, kind=original.kind, payload=payload, submitted_at=time.time()
    )
    queued = new_event(original.kind, new_id, "queued", 1, message=f"retry of {task_id}")

    recorded: list[StoredEvent] = []

    async def accept(tx: Transaction) -> None:
        if not await task_inputs.keep(tx, message, kept.priority, retry_of=task_id):
            raise _Retried(await task_inputs.retry_of(tx, task_id) or new_id)
        results = await record_events(tx, [(queued, encoder.encode(queued))], owner=summary.owner)
        recorded[:] = to_announce(results)
        await add_to_outbox(
            tx, task_entry(message, kept.priority), max_pending=settings.outbox_max_pending
        )

    try:
        await database.write(accept)
    except _Retried as exc:
        await storage.delete_task(new_id)
        return _accepted(exc.task_id, task_id)
    except OutboxFull as exc:
        await storage.delete_task(new_id)
        raise outbox_full(exc) from None
    except Exception:  # not committed: the copy goes (a cancelled request's, the orphan sweep)
        await storage.delete_task(new_id)
        raise
    relay: OutboxRelay = request.app.state.relay
    relay.wake()
    for event in recorded:
        await announce_recorded(request.app.state.publisher, event)
    return _accepted(new_id, task_id)


async def _check_in_flight(store: DatabaseTaskStore, user_id: str, limit: int) -> None:
    """429 for a user with ``TASKS_IN_FLIGHT_PER_USER`` unfinished tasks, as for an upload."""
    if await store.count_unfinished(user_id, up_to=limit) >= limit:
        raise HttpError(
            429,
            "too_many_tasks",
            f"at most {limit} unfinished tasks per user",
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )


async def _copy_file(storage: Storage, original: TaskMessage, new_id: str) -> msgspec.Raw:
    """The payload for ``new_id``: its ``file`` under the original's prefix copied to its own."""
    payload = msgspec.json.decode(original.payload)
    prefix = f"{original.task_id}/"
    file = payload.get("file") if isinstance(payload, dict) else None
    if not isinstance(file, str) or not file.startswith(prefix):
        return original.payload
    copy = f"{new_id}/{file.removeprefix(prefix)}"
    stored = await storage.read(file)
    writer = storage.writer(copy)
    try:
        async for chunk in stored.chunks:
            await writer.write(chunk)
        await writer.commit()
    except Exception:
        await writer.abort()
        raise
    return msgspec.Raw(encoder.encode({**payload, "file": copy}))


def _accepted(task_id: str, retry_of: str) -> JSONResponse:
    return JSONResponse(
        {"task_id": task_id, "retry_of": retry_of},
        status_code=202,
        headers={"Location": status_url(task_id)},
    )
