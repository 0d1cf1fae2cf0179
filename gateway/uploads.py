"""``POST /uploads``: store an image and its thumbnail task; answer once both are committed.

The file is written under its task's directory first. Then one transaction
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
import shutil
import time
from pathlib import Path

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse

from infra.database import Database, Transaction, Work
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

from .auth import authenticate
from .errors import HttpError
from .idempotency import IdempotencyConflict, claim_upload_key, idempotency_key
from .metrics import TASKS_ACCEPTED, UPLOAD_BYTES
from .multipart import FormLimits, receive_form
from .outbox import OutboxFull, add_to_outbox, outbox_full, task_entry
from .outbox_relay import OutboxRelay
from .publisher import Publisher
from .settings import GatewaySettings
from .sniff import EXTENSIONS, probe_image, sniff_format
from .submission import submission
from .task_store import record_events
from .upload_limits import check_sizes
from .views import events_url, status_url

FILE_FIELD = "file"


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


async def create_upload(request: Request) -> JSONResponse:
    settings: GatewaySettings = request.app.state.settings
    database: Database = request.app.state.database
    relay: OutboxRelay = request.app.state.relay
    user = authenticate(request)
    key = idempotency_key(request)
    task_id = new_task_id()
    task_dir = settings.storage_dir / task_id
    formats: list[str] = []

    def sniff(head: bytes) -> None:
        formats.append(sniff_format(head))

    try:
        form = await receive_form(
            request,
            file_field=FILE_FIELD,
            file_path=task_dir / ".upload",
            limits=FormLimits(max_file_bytes=settings.max_upload_bytes),
            sniff=sniff,
        )
        if form.file is None or form.file.size == 0:
            raise HttpError(422, "missing_file", f"send the image in the {FILE_FIELD!r} field")
        options = _options(form.fields)
        how = submission(form.fields, max_delay_s=settings.max_task_delay_s)
        check_sizes(
            options, probe_image(form.file.path, settings.max_pixels), settings.max_thumbnail_sizes
        )
        source = f"source.{EXTENSIONS[formats[0]]}"
        form.file.path.rename(task_dir / source)
        request_hash = (
            "" if key is None else await asyncio.to_thread(_hash, task_dir / source, form.fields)
        )
        await _check_kind(request.app.state.publisher, settings.upload_kind)
        message = TaskMessage(
            task_id=task_id,
            kind=settings.upload_kind,
            payload=msgspec.Raw(
                encoder.encode(ThumbnailRequest(file=f"{task_id}/{source}", options=options))
            ),
            submitted_at=time.time(),
        )
    except BaseException:
        shutil.rmtree(task_dir, ignore_errors=True)
        raise
    queued: StatusEvent = (
        new_event(settings.upload_kind, task_id, "queued", 1)
        if how.run_at is None
        else scheduled_event(settings.upload_kind, task_id, how.run_at)
    )
    entry = task_entry(message, how.priority, not_before=how.run_at or 0.0)

    async def accept(tx: Transaction) -> str:
        if key is not None:
            earlier = await claim_upload_key(tx, user.user_id, key, request_hash, task_id)
            if earlier is not None:
                return earlier
        await record_events(tx, [(queued, encoder.encode(queued))], owner=user.user_id)
        await add_to_outbox(tx, entry, max_pending=settings.outbox_max_pending)
        return task_id

    accepted = await _commit(database, accept, task_dir)
    if accepted == task_id:
        relay.wake()
        TASKS_ACCEPTED.labels(settings.upload_kind).inc()
        UPLOAD_BYTES.inc(form.file.size)
    else:  # a retry of an upload accepted before: its own copy of the file is not needed
        shutil.rmtree(task_dir, ignore_errors=True)
    return JSONResponse(
        {
            "task_id": accepted,
            "status_url": status_url(accepted),
            "events_url": events_url(accepted),
        },
        status_code=202,
        headers={"Location": status_url(accepted)},
    )


async def _commit(database: Database, accept: Work[str], task_dir: Path) -> str:
    """Run the accepting transaction; on a refusal, nothing is kept (the directory goes too).

    A cancelled request (the client left) leaves the directory: the transaction
    may still commit, and if it does not, the orphan sweeper removes it.
    """
    try:
        return await asyncio.shield(database.write(accept))
    except OutboxFull as exc:
        shutil.rmtree(task_dir, ignore_errors=True)
        raise outbox_full(exc) from None
    except IdempotencyConflict as exc:
        shutil.rmtree(task_dir, ignore_errors=True)
        raise HttpError(409, "idempotency_conflict", str(exc)) from None
    except Exception:  # rolled back (the store cannot commit, ...): nothing was stored
        shutil.rmtree(task_dir, ignore_errors=True)
        raise


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


def _hash(path: Path, fields: dict[str, str]) -> str:
    """What identifies the request for Idempotency-Key: the file's bytes and the form's fields."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    digest.update(encoder.encode(sorted(fields.items())))
    return digest.hexdigest()
