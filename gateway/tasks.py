"""``GET /tasks/{id}`` and the result files under ``/files/<task_id>/<name>``.

Result files are streamed through the gateway from whichever store holds them,
never handed out as presigned S3 URLs: every request is checked against its
owner or an admin (a presigned URL is a bearer link for its lifetime, and a revoked
session could not take it back), the response keeps the gateway's headers
(``nosniff``, ``Cache-Control: private``), the page's CSP stays ``img-src 'self'``,
and the S3 endpoint need not be reachable from browsers. The cost is the
gateway's bandwidth and about one event-loop pass per 64 KiB
(docs/design.md, "Object storage").
"""

from __future__ import annotations

import mimetypes
import re

import msgspec
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse

from infra.storage import ObjectMissing, Storage
from workers.messages import TASK_ID_PATTERN

from .auth import authenticate
from .errors import HttpError
from .openapi import Media, documented
from .store import TaskStore, TaskSummary
from .tokens import Claims
from .views import TaskView, task_view

# Names the workers give their outputs; anything else (dotfiles, paths) is not served.
_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_TASK_ID = re.compile(TASK_ID_PATTERN)


async def owned_task(request: Request, task_id: str, user: Claims) -> TaskSummary:
    """The task, if ``user`` created it or is an admin; 404 otherwise (whether or not it
    exists)."""
    store: TaskStore = request.app.state.store
    summary = await store.get_task(task_id)
    if summary is None or (summary.owner != user.user_id and not user.admin):
        raise HttpError(404, "not_found", f"no task {task_id!r}")
    return summary


@documented("A task", responses={200: TaskView}, errors=(404,))
async def get_task(request: Request) -> JSONResponse:
    user = authenticate(request)
    return JSONResponse(task_view(await owned_task(request, request.path_params["task_id"], user)))


# Outputs are written once under fixed names and never change; only their owner may
# see them, so no shared cache may keep one.
_FILE_HEADERS = {"Cache-Control": "private, max-age=31536000, immutable"}


@documented(
    "One of a task's output files",
    responses={200: Media("*/*", "The file, as its worker wrote it")},
    errors=(404, 503),
)
async def get_file(request: Request) -> Response:
    """One of the task's outputs, as its result lists them; never the upload or anything else."""
    user = authenticate(request)
    storage: Storage = request.app.state.storage
    task_id = request.path_params["task_id"]
    name = request.path_params["name"]
    if not _TASK_ID.match(task_id) or not _FILE_NAME.match(name) or ".." in name:
        raise HttpError(404, "not_found", "no such file")
    summary = await owned_task(request, task_id, user)
    key = f"{task_id}/{name}"
    if key not in _output_paths(summary):
        raise HttpError(404, "not_found", "no such file")
    path = storage.local_path(key)
    if path is not None:
        if not path.is_file():
            raise HttpError(404, "not_found", "no such file")
        return FileResponse(path, headers=_FILE_HEADERS)
    try:
        stored = await storage.read(key)
    except ObjectMissing:
        raise HttpError(404, "not_found", "no such file") from None
    return StreamingResponse(
        stored.chunks,
        media_type=mimetypes.guess_type(name)[0] or "application/octet-stream",
        headers={**_FILE_HEADERS, "Content-Length": str(stored.size)},
    )


def _output_paths(summary: TaskSummary) -> set[str]:
    """``<task_id>/<name>`` of each output the task's result lists."""
    if summary.result is None:
        return set()
    try:
        result = msgspec.json.decode(summary.result)
    except msgspec.DecodeError:
        return set()
    outputs = result.get("outputs") if isinstance(result, dict) else None
    if not isinstance(outputs, list):
        return set()
    return {
        output["path"]
        for output in outputs
        if isinstance(output, dict) and isinstance(output.get("path"), str)
    }
