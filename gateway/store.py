"""The task store's interface and the rules every backend shares.

A task's status events are kept in the order they were recorded, each with a
sequence number that counts that task's events from 1. The number is the SSE
``id:``: a stream resumes after it, and a gap in it tells a stream that it
missed an event and must read the store. Recording is idempotent by
``event_id``; a duplicate gets the number its first copy got.

Next to the events, each task has a summary row (state, progress, result,
error) that ``apply_event`` keeps up to date. A terminal state is final: an
event that comes after it is not recorded (a ``RejectedEvent``), so a task has
one outcome. One exception, ``reopens``: a ``dead`` task replayed from its dead
queue (``workers.dead.replay``) takes its ``queued`` event and runs on. ``dead``
is no outcome to the workers (their outcome log keeps none for it): the dead
letter is the task's one message, parked, and the replay moves it back.

``StoreUnavailable`` (the database's ``DatabaseUnavailable``) means the store
cannot take a write now (read-only, its write lock held beyond the bound, an
I/O error, unreachable); the gateway answers it with a JSON 503 and Retry-After.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import msgspec

from infra.database import DatabaseUnavailable
from workers.messages import TERMINAL_STATES, StatusEvent

# The gateway's name for it: the store cannot take a write now; retry later.
StoreUnavailable = DatabaseUnavailable


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """A recorded status event: its sequence number in its task, and its JSON as published."""

    task_id: str
    seq: int
    state: str
    body: bytes

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES


@dataclass(frozen=True, slots=True)
class RejectedEvent:
    """An event the store did not record, and why (it came after its task's terminal event)."""

    task_id: str
    event_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class TaskSummary:
    """What ``GET /tasks/{id}`` shows; ``result`` is JSON text."""

    task_id: str
    kind: str
    state: str
    attempt: int
    created_at: float
    updated_at: float
    last_seq: int
    percent: float | None = None
    message: str | None = None
    result: str | None = None
    error: str | None = None
    # The user who created the task; None for tasks that did not come through the gateway.
    owner: str | None = None

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES


@dataclass(frozen=True, slots=True)
class TaskQuery:
    """Which tasks a list shows: each filter set narrows it; ``before`` is the keyset
    cursor ``(created_at, task_id)`` of the last task of the page before."""

    limit: int
    owner: str | None = None
    state: str | None = None
    kind: str | None = None
    since: float | None = None
    before: tuple[float, str] | None = None


def reopens(summary: TaskSummary, event: StatusEvent) -> bool:
    """Whether ``event`` brings the ended task back: a replay's ``queued`` after ``dead``
    (no one else publishes ``queued`` for a task that has events)."""
    return summary.state == "dead" and event.state == "queued"


def apply_event(
    summary: TaskSummary | None, event: StatusEvent, *, owner: str | None = None
) -> TaskSummary:
    """The summary after ``event`` (recorded as the task's next sequence number).

    ``owner`` applies to a task this event creates. The caller records nothing
    after a terminal summary (see ``RejectedEvent``).
    """
    if summary is None:
        summary = TaskSummary(
            task_id=event.task_id,
            kind=event.kind,
            state=event.state,
            attempt=event.attempt,
            created_at=event.timestamp,
            updated_at=event.timestamp,
            last_seq=0,
            owner=owner,
        )
    seq = summary.last_seq + 1
    changes: dict[str, object] = {
        "last_seq": seq,
        "updated_at": max(summary.updated_at, event.timestamp),
        "attempt": max(summary.attempt, event.attempt),
    }
    match event.state:
        case "progress":
            changes.update(state="running", percent=event.percent, message=event.message)
        case "running":
            changes.update(state="running", percent=0.0, message=None, error=None)
        case "succeeded":
            changes.update(state="succeeded", percent=100.0, error=None)
            changes["result"] = msgspec.json.encode(event.result).decode()
        case "queued":
            changes.update(state="queued")
        case "scheduled":  # the message says when it is due
            changes.update(state="scheduled", message=event.message)
        case _:  # failed, retrying, dead, cancelled, stuck
            changes.update(state=event.state, error=event.error)
    return replace(summary, **changes)  # type: ignore[arg-type]


class TaskStore(Protocol):
    """Where the gateway keeps tasks and their events (``DatabaseTaskStore``)."""

    async def record(
        self, events: Sequence[tuple[StatusEvent, bytes]], *, owner: str | None = None
    ) -> list[StoredEvent | RejectedEvent]:
        """Record ``(event, its JSON)`` pairs in order, in one transaction; one result per event.

        Raises StoreUnavailable, with nothing recorded, if the write cannot commit in time.
        A duplicate ``event_id`` is not recorded again; its stored event is returned.
        An event after its task's terminal event is a RejectedEvent, not recorded.
        A task the events create belongs to ``owner``.
        """
        ...

    async def discard_task(self, task_id: str) -> None:
        """Forget a task that was never accepted (its publish failed)."""
        ...

    async def get_task(self, task_id: str) -> TaskSummary | None: ...

    async def list_tasks(self, query: TaskQuery) -> list[TaskSummary]:
        """The tasks ``query`` selects, newest first."""
        ...

    async def events_after(self, task_id: str, after_seq: int, limit: int) -> list[StoredEvent]:
        """The task's events with a sequence number above ``after_seq``, oldest first."""
        ...

    async def check_write(self) -> None:
        """Commit a write within the store's bound, or raise StoreUnavailable."""
        ...

    async def close(self) -> None: ...
