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


def task_view(summary: TaskSummary) -> dict[str, Any]:
    """``GET /tasks/{id}``; the result's output files get a ``url``."""
    result = msgspec.json.decode(summary.result) if summary.result is not None else None
    if isinstance(result, dict) and isinstance(result.get("outputs"), list):
        for output in result["outputs"]:
            if isinstance(output, dict) and isinstance(output.get("path"), str):
                output["url"] = file_url(output["path"])
    return {
        "task_id": summary.task_id,
        "kind": summary.kind,
        "state": summary.state,
        "percent": summary.percent,
        "message": summary.message,
        "attempt": summary.attempt,
        "result": result,
        "error": summary.error,
        "created_at": summary.created_at,
        "updated_at": summary.updated_at,
        "last_event_id": summary.last_seq,
        "status_url": status_url(summary.task_id),
        "events_url": events_url(summary.task_id),
    }
