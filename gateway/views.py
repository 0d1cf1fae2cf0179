"""How tasks look over HTTP: their URLs and their JSON."""

from __future__ import annotations

from typing import Any

import msgspec

from .store import TaskSummary


def status_url(task_id: str) -> str:
    return f"/tasks/{task_id}"


def events_url(task_id: str) -> str:
    return f"/tasks/{task_id}/events"


def file_url(path: str) -> str:
    """URL of a result file; ``path`` is ``<task_id>/<name>`` as the worker reports it."""
    return f"/files/{path}"


class TaskView(msgspec.Struct, frozen=True):
    """A task as ``GET /tasks/{id}`` shows it; times are Unix seconds."""

    task_id: str
    kind: str
    state: str
    percent: float | None
    message: str | None
    attempt: int
    result: Any  # the kind's result, as its worker reported it; its outputs have a ``url``
    error: str | None
    created_at: float
    updated_at: float
    last_event_id: int
    status_url: str
    events_url: str


class TaskAccepted(msgspec.Struct, frozen=True):
    """A task the gateway took: where to follow it."""

    task_id: str
    status_url: str
    events_url: str


def accepted_view(task_id: str) -> dict[str, Any]:
    return msgspec.to_builtins(TaskAccepted(task_id, status_url(task_id), events_url(task_id)))


def with_urls(result: Any) -> Any:
    """A task's result (JSON), each output file it lists with its ``url`` added."""
    if isinstance(result, dict) and isinstance(result.get("outputs"), list):
        for output in result["outputs"]:
            if isinstance(output, dict) and isinstance(output.get("path"), str):
                output["url"] = file_url(output["path"])
    return result


def task_view(summary: TaskSummary) -> dict[str, Any]:
    """``GET /tasks/{id}`` (a ``TaskView``); the result's output files get a ``url``."""
    result = msgspec.json.decode(summary.result) if summary.result is not None else None
    view = TaskView(
        task_id=summary.task_id,
        kind=summary.kind,
        state=summary.state,
        percent=summary.percent,
        message=summary.message,
        attempt=summary.attempt,
        result=with_urls(result),
        error=summary.error,
        created_at=summary.created_at,
        updated_at=summary.updated_at,
        last_event_id=summary.last_seq,
        status_url=status_url(summary.task_id),
        events_url=events_url(summary.task_id),
    )
    return msgspec.to_builtins(view)  # type: ignore[no-any-return]
