"""The admin API's JSON bodies as types, for the OpenAPI document (docs/admin-contract.md
shapes; times are Unix seconds)."""

from __future__ import annotations

from typing import Any

import msgspec

from ..views import TaskView


class KindFigures(msgspec.Struct, frozen=True):
    kind: str
    queued: int
    queued_high: int
    in_flight: int
    oldest_queued_s: float | None
    dead: int
    done_per_min: float
    failed_per_min: float


class Running(msgspec.Struct, frozen=True):
    task_id: str
    kind: str
    since: float | None


class WorkerView(msgspec.Struct, frozen=True):
    name: str
    host: str
    pid: int
    started_at: float
    seen_at: float
    kinds: list[str]
    running: list[Running]


class RpcServerView(msgspec.Struct, frozen=True):
    name: str
    host: str
    pid: int
    started_at: float
    seen_at: float
    methods: list[str]


class RpcMethodFigures(msgspec.Struct, frozen=True):
    """Over the last 15 minutes."""

    method: str
    calls: int
    errors: int
    p50_ms: float | None
    p99_ms: float | None


class OverviewView(msgspec.Struct, frozen=True):
    at: float
    kinds: list[KindFigures]
    workers: list[WorkerView]
    rpc_servers: list[RpcServerView]
    rpc_methods: list[RpcMethodFigures]


class StepFigures(msgspec.Struct, frozen=True):
    """``done`` and ``failed``: tasks that ended in that step."""

    queued: int
    in_flight: int
    done: int
    failed: int


class HistoryPoint(msgspec.Struct, frozen=True):
    at: float
    kinds: dict[str, StepFigures]


class HistoryView(msgspec.Struct, frozen=True):
    step_s: float
    points: list[HistoryPoint]


class TimelineEvent(msgspec.Struct, frozen=True):
    event_id: str
    state: str
    attempt: int
    timestamp: float
    worker: str | None
    percent: float | None
    message: str | None
    error: str | None
    result: Any
    retry_in_ms: int | None
    run_at: float | None


class TimelineView(msgspec.Struct, frozen=True):
    task: TaskView
    events: list[TimelineEvent]
    # The task this one retries, and the task that retries it (gateway/admin/retry.py).
    retry_of: str | None = None
    retried_by: str | None = None


class DeadQueue(msgspec.Struct, frozen=True):
    queue: str
    kind: str | None
    count: int


class DeadQueues(msgspec.Struct, frozen=True):
    queues: list[DeadQueue]


class DeadMessage(msgspec.Struct, frozen=True):
    message_id: str
    task_id: str | None
    attempt: int | None
    reason: str | None
    from_queue: str | None
    died_at: float | None
    headers: dict[str, Any]
    body: str  # the first 4 KiB, as text


class DeadMessages(msgspec.Struct, frozen=True):
    messages: list[DeadMessage]


class LeftBehind(msgspec.Struct, frozen=True):
    message_id: str
    reason: str


class Replayed(msgspec.Struct, frozen=True):
    replayed: int
    missing: list[str]
    left: list[LeftBehind]


class Discarded(msgspec.Struct, frozen=True):
    discarded: int
    missing: list[str]


class Retried(msgspec.Struct, frozen=True):
    """The task that now runs, and the one it retries."""

    task_id: str
    retry_of: str
