"""``POST /uploads``: store an image, create its thumbnail task, answer once the broker has it.

The order makes every failure clean: the file is written under its task's
directory, the task and its ``queued`` event are recorded, and only then is the
task published. If the broker refuses or does not confirm in time, the task
row and the directory are removed and the client gets a 503 with Retry-After;
if the store cannot take the task (``StoreUnavailable``), the directory goes and
the app's handler answers the same kind of 503.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse

from rpc.errors import BrokerUnavailable
from workers.image_contracts import ThumbnailOptions, ThumbnailRequest
from workers.messages import StatusEvent, TaskMessage, encoder, new_event, new_task_id

from .auth import authenticate
from .errors import HttpError, unavailable
from .metrics import TASKS_ACCEPTED, UPLOAD_BYTES
from .multipart import FormLimits, receive_form
from .publisher import Publisher
from .settings import GatewaySettings
from .sniff import EXTENSIONS, probe_image, sniff_format
from .store import TaskStore
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
    store: TaskStore = request.app.state.store
    publisher: Publisher = request.app.state.publisher
    user = authenticate(request)
    if not publisher.ready:
        raise unavailable("not connected to the broker")
    task_id = new_task_id()
    task_dir = settings.storage_dir / task_id
    formats: list[str] = []

    def sniff(head: bytes) -> None:
        formats.append(sniff_format(head))

    recorded = False
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
        check_sizes(
            options, probe_image(form.file.path, settings.max_pixels), settings.max_thumbnail_sizes
        )
        source = f"source.{EXTENSIONS[formats[0]]}"
        form.file.path.rename(task_dir / source)
        message = TaskMessage(
            task_id=task_id,
            kind=settings.upload_kind,
            payload=msgspec.Raw(
                encoder.encode(ThumbnailRequest(file=f"{task_id}/{source}", options=options))
            ),
            submitted_at=time.time(),
        )
        queued: StatusEvent = new_event(settings.upload_kind, task_id, "queued", 1)
        await store.record([(queued, encoder.encode(queued))], owner=user.user_id)
        recorded = True
        await publisher.publish_task(message)
        TASKS_ACCEPTED.labels(settings.upload_kind).inc()
        UPLOAD_BYTES.inc(form.file.size)
    except BrokerUnavailable as exc:
        await _discard(store, task_id, task_dir, recorded)
        raise unavailable(str(exc)) from None
    except BaseException:
        await _discard(store, task_id, task_dir, recorded)
        raise
    return JSONResponse(
        {
            "task_id": task_id,
            "status_url": status_url(task_id),
            "events_url": events_url(task_id),
        },
        status_code=202,
        headers={"Location": status_url(task_id)},
    )


async def _discard(store: TaskStore, task_id: str, task_dir: Path, recorded: bool) -> None:
    """Remove what an upload that was not accepted left behind."""
    try:
        if recorded:
            await store.discard_task(task_id)
    finally:
        # Even when the store cannot forget the task: nothing will ever read the file.
        shutil.rmtree(task_dir, ignore_errors=True)
