"""``POST /uploads``: store an image and its thumbnail task; answer once both are committed.

The file is streamed into the object store (``infra/storage.py``) under its
task's prefix, ``<task_id>/source.<ext>``, as it arrives. Then one transaction
records the task, its ``queued`` event and the task message in the outbox
(``gateway/outbox.py``); the 202 follows its commit, and the outbox relay
publishes the task. The broker being down or slow delays the task, it does not
refuse it, until the outbox holds ``OUTBOX_MAX_PENDING`` messages: then 503
with Retry-After, like a store that cannot commit, and nothing is kept.

With an ``Idempotency-Key`` (per user), a retry with the same file and
options gets the same task and 202 again; with another body, 409.

``priority``, ``delay_s`` and ``run_at`` (``gateway/submission.py``) choose the
kind's queue and when the relay publishes the task; a delayed task's first
event is ``scheduled`` with its ``run_at``, not ``queued``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse

from infra.database import Database, Transaction, Work
from infra.storage import ObjectWriter, Storage, StorageError
from rpc.errors import BrokerUnavailable
from workers.image_contracts import ThumbnailOptions, ThumbnailRequest
from workers.messages import (
    StatusEvent,
    TaskMessage,
    encoder,
    new_event,
    new_task_id,
    scheduled_event,
)

from . import task_inputs
from .announce import announce_recorded, to_announce
from .auth import authenticate
from .errors import HttpError
from .idempotency import (
    IDEMPOTENCY_HEADER,
    IdempotencyConflict,
    claim_upload_key,
    idempotency_key,
)
from .metrics import TASKS_ACCEPTED, UPLOAD_BYTES
from .multipart import FormLimits, receive_form
from .openapi import Media, documented
from .outbox import OutboxFull, add_to_outbox, outbox_full, task_entry
from .outbox_relay import OutboxRelay
from .publisher import Publisher
from .settings import GatewaySettings
from .sniff import EXTENSIONS, probe_stored, sniff_format
from .store import StoredEvent
from .submission import submission
from .task_store import record_events
from .upload_limits import check_sizes
from .views import TaskAccepted, accepted_view, status_url

FILE_FIELD = "file"
# The form's fields (a form, not JSON: its schema is written here, not made from a Struct).
UPLOAD_FORM = {
    "type": "object",
    "required": [FILE_FIELD],
    "properties": {
        FILE_FIELD: {"type": "string", "format": "binary", "description": "JPEG, PNG or WebP"},
        "watermark": {"type": "string"},
        "quality": {"type": "string", "description": "a whole number, 1 to 95"},
        "sizes": {"type": "string", "description": "pixel sizes, comma-separated"},
        "priority": {"type": "string", "enum": ["normal", "high"]},
        "delay_s": {"type": "string", "description": "seconds"},
        "run_at": {"type": "string", "description": "Unix seconds or ISO 8601"},
    },
}

logger = logging.getLogger(__name__)


def _options(fields: dict[str, str]) -> ThumbnailOptions:
    """Thumbnail options from the form's ``watermark``, ``quality`` and ``sizes`` fields."""
    raw: dict[str, object] = {}
    try:
        if fields.get("watermark"):
            raw["watermark"] = fields["watermark"]
        if fields.get("quality"):
            raw["quality"] = int(fields["quality"])
        if fields.get("sizes"):
            raw["sizes_px"] = [int(size) for size in fields["sizes"].split(",")]
    except ValueError:
        raise HttpError(422, "invalid_field", "quality and sizes must be integers") from None
    try:
        return msgspec.convert(raw, ThumbnailOptions)
    except msgspec.ValidationError as exc:
        raise HttpError(422, "invalid_field", str(exc)) from None


@documented(
    "Upload an image: a thumbnail task",
    responses={202: TaskAccepted},
    body=Media("multipart/form-data", "The image and its options", UPLOAD_FORM),
    errors=(400, 409, 413, 422, 429),
    headers=IDEMPOTENCY_HEADER,
)
async def create_upload(request: Request) -> JSONResponse:
    settings: GatewaySettings = request.app.state.settings
    database: Database = request.app.state.database
    storage: Storage = request.app.state.storage
    relay: OutboxRelay = request.app.state.relay
    user = authenticate(request)
    key = idempotency_key(request)
    task_id = new_task_id()
    sources: list[str] = []

    def open_file(head: bytes) -> ObjectWriter:
        sources.append(f"{task_id}/source.{EXTENSIONS[sniff_format(head)]}")
        return storage.writer(sources[0])

    def forget_files() -> Awaitable[None]:
        return storage.delete_task(task_id)

    try:
        form = await receive_form(
            request,
            file_field=FILE_FIELD,
            limits=FormLimits(max_file_bytes=settings.max_upload_bytes),
            open_file=open_file,
            hash_file=key is not None,
        )
        if form.file is None or form.file.size == 0:
            raise HttpError(422, "missing_file", f"send the image in the {FILE_FIELD!r} field")
        options = _options(form.fields)
        how = submission(form.fields, max_delay_s=settings.max_task_delay_s)
        probe = await probe_stored(storage, sources[0], settings.max_pixels)
        check_sizes(options, probe, settings.max_thumbnail_sizes)
        request_hash = "" if form.file.digest is None else _hash(form.file.digest, form.fields)
        await _check_kind(request.app.state.publisher, settings.upload_kind)
        message = TaskMessage(
            task_id=task_id,
            kind=settings.upload_kind,
            payload=msgspec.Raw(encoder.encode(ThumbnailRequest(file=sources[0], options=options))),
            submitted_at=time.time(),
        )
    except BaseException:
        if sources:
            await _shielded(forget_files)
        raise
    queued: StatusEvent = (
        new_event(settings.upload_kind, task_id, "queued", 1)
        if how.run_at is None
        else scheduled_event(settings.upload_kind, task_id, how.run_at)
    )
    entry = task_entry(message, how.priority, not_before=how.run_at or 0.0)

    recorded: list[StoredEvent] = []

    async def accept(tx: Transaction) -> str:
        if key is not None:
            earlier = await claim_upload_key(tx, user.user_id, key, request_hash, task_id)
            if earlier is not None:
                return earlier
        results = await record_events(tx, [(queued, encoder.encode(queued))], owner=user.user_id)
        recorded[:] = to_announce(results)
        await add_to_outbox(tx, entry, max_pending=settings.outbox_max_pending)
        await task_inputs.keep(tx, message, how.priority)  # for a retry
        return task_id

    accepted = await _commit(database, accept, forget_files)
    if accepted == task_id:
        relay.wake()
        TASKS_ACCEPTED.labels(settings.upload_kind).inc()
        UPLOAD_BYTES.inc(form.file.size)
        for event in recorded:
            await announce_recorded(request.app.state.publisher, event)
    else:  # a retry of an upload accepted before: its own copy of the file is not needed
        await _shielded(forget_files)
    return JSONResponse(
        accepted_view(accepted),
        status_code=202,
        headers={"Location": status_url(accepted)},
    )


async def _commit(
    database: Database, accept: Work[str], forget_files: Callable[[], Awaitable[None]]
) -> str:
    """Run the accepting transaction; on a refusal, nothing is kept (the file goes too).

    A cancelled request (the client left) leaves the file: the transaction
    may still commit, and if it does not, the orphan sweeper removes it.
    """
    try:
        return await asyncio.shield(database.write(accept))
    except OutboxFull as exc:
        await _shielded(forget_files)
        raise outbox_full(exc) from None
    except IdempotencyConflict as exc:
        await _shielded(forget_files)
        raise HttpError(409, "idempotency_conflict", str(exc)) from None
    except Exception:  # rolled back (the store cannot commit, ...): nothing was stored
        await _shielded(forget_files)
        raise


async def _shielded(forget_files: Callable[[], Awaitable[None]]) -> None:
    """Remove the upload's files, even while the request is being cancelled.

    A store that fails here leaves them to the orphan sweeper.
    """
    try:
        await asyncio.shield(forget_files())
    except StorageError as exc:
        logger.warning("could not remove an upload's files (%s); the sweeper will", exc)


async def _check_kind(publisher: Publisher, kind: str) -> None:
    """Refuse the upload (500, BrokerRefused) if the broker refuses the kind's queue.

    That is a configuration error no retry mends; finding it before the commit
    answers the client instead of leaving a task that can never be published.
    A broker that is down or slow is not checked: the relay declares the queue later.
    """
    try:
        await publisher.declare_kind(kind)
    except BrokerUnavailable:
        pass


def _hash(digest: hashlib._Hash, fields: dict[str, str]) -> str:
    """What identifies the request for Idempotency-Key: the file's bytes and the form's fields."""
    digest = digest.copy()
    digest.update(encoder.encode(sorted(fields.items())))
    return digest.hexdigest()
