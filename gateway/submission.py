"""How and when accepted work runs: the ``priority``, ``delay_s`` and ``run_at`` fields.

``priority`` is ``high`` or ``normal`` (the default): high work overtakes the
kind's queued normal work. ``delay_s`` (seconds) or ``run_at`` (Unix time, or
ISO 8601 with a time zone) hold the task in the outbox until then, up to
``MAX_TASK_DELAY_S`` ahead; a time not in the future means at once.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import get_args

from workers.messages import due_time
from workers.topology import Priority

from .errors import HttpError

FIELDS = ("priority", "delay_s", "run_at")


@dataclass(frozen=True, slots=True)
class Submission:
    priority: Priority = "normal"
    # Unix time the task is due; None: at once.
    run_at: float | None = None


def submission(fields: Mapping[str, str], *, max_delay_s: float) -> Submission:
    """The fields' submission options; HttpError 422 naming the field that is wrong."""
    priority = fields.get("priority") or "normal"
    if priority not in get_args(Priority):
        raise HttpError(422, "invalid_field", f"priority must be high or normal, not {priority!r}")
    now = time.time()
    try:
        delay_s = _number(fields, "delay_s")
        run_at = _time(fields.get("run_at"))
        due = due_time(delay_s, run_at, now)
    except ValueError as exc:
        raise HttpError(422, "invalid_field", str(exc)) from None
    if due is not None and due - now > max_delay_s:
        raise HttpError(
            422, "invalid_field", f"a task may be delayed up to {max_delay_s:.0f} s ahead"
        )
    return Submission(priority=priority, run_at=due)  # type: ignore[arg-type]


def _number(fields: Mapping[str, str], name: str) -> float | None:
    text = fields.get(name)
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{name} must be a number of seconds, not {text!r}") from None


def _time(text: str | None) -> float | None:
    """Unix seconds, or ISO 8601 with a time zone (``2026-01-31T09:00:00Z``)."""
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"run_at must be Unix time or ISO 8601, not {text!r}") from None
    if moment.tzinfo is None:
        raise ValueError(f"run_at needs a time zone (e.g. Z or +02:00): {text!r}")
    return moment.timestamp()
