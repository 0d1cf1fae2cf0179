"""The autoscaling signal: per registered kind, how much work waits and how many workers
it needs.

From the store (the same in every web process): tasks held by workers
(``unacked``: live leases), the age of the oldest task waiting that no worker
holds, arrivals (tasks created) and completions (outcomes recorded) over the
last ``window_s``, and the mean run time of those completions. From the
broker (a passive ``queue.declare``): the ready count and the consumers.

``desired_workers`` is Little's law: the handler slots busy on average are
arrivals/s x mean task time; a ready backlog adds the slots that drain it
within ``drain_s``; divided by a worker's concurrency, rounded up, bounded.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from infra.background import cancel_and_wait
from infra.database import Database, DatabaseError, Migration, Transaction
from rpc.connection import close_channels
from rpc.wire import Channel, RobustChannel, WireConnection, WireError
from workers import kinds
from workers.topology import PRIORITIES, task_queue

from . import metrics

logger = logging.getLogger(__name__)

COMPONENT = "autoscale"
# On the tasks table (its component's steps belong to gateway/task_store.py, whose
# tasks_created index serves the arrivals' count).
MIGRATIONS: list[Migration] = [
    "CREATE INDEX IF NOT EXISTS tasks_kind_state_created ON tasks (kind, state, created_at)",
]
# States of a task waiting in its queue (retries wait in a delay tier first).
WAITING_STATES = ("queued", "stuck")


@dataclass(frozen=True, slots=True)
class Bounds:
    """How ``desired_workers`` is computed and bounded."""

    window_s: float
    drain_s: float
    min_workers: int
    max_workers: int


@dataclass(frozen=True, slots=True)
class KindLoad:
    """The signal of one kind; None where the source has no figure."""

    kind: str
    ready: int | None
    consumers: int | None
    unacked: int
    oldest_ready_age_s: float
    arrivals_per_s: float
    completions_per_s: float
    mean_task_s: float | None
    concurrency: int
    desired_workers: int


@dataclass(frozen=True, slots=True)
class QueueCount:
    ready: int
    consumers: int


def desired_workers(
    *,
    arrivals_per_s: float,
    mean_task_s: float | None,
    ready: int,
    unacked: int,
    concurrency: int,
    bounds: Bounds,
) -> int:
    """Workers to run for a kind: Little's law plus draining the backlog, bounded.

    Without a completed task in the window (no task time yet), one worker per
    ``concurrency`` tasks waiting or held, at least one while there is any work.
    """
    if mean_task_s is None:
        work = ready + unacked + (1 if arrivals_per_s > 0 else 0)
        needed = math.ceil(work / max(concurrency, 1))
    else:
        busy_slots = arrivals_per_s * mean_task_s + ready * mean_task_s / bounds.drain_s
        needed = math.ceil(busy_slots / max(concurrency, 1) - 1e-9)
    return max(bounds.min_workers, min(bounds.max_workers, needed))


async def measure(
    database: Database,
    queues: Mapping[str, QueueCount | None],
    bounds: Bounds,
    now_s: float | None = None,
) -> list[KindLoad]:
    """The signal of every registered kind; ``queues``: the broker's counts by kind."""
    now_s = time.time() if now_s is None else now_s
    since_s = now_s - bounds.window_s

    async def read(tx: Transaction) -> list[KindLoad]:
        registered = await kinds.registered(tx)
        if not registered:
            return []  # no worker ever started: task_outcomes may not exist yet
        unacked = await _by_kind(
            tx,
            "SELECT kind, count(*) FROM worker_claims WHERE scope = 'task' AND until_s >= $1"
            " AND kind IS NOT NULL GROUP BY kind",
            now_s,
        )
        arrivals = await _by_kind(
            tx, "SELECT kind, count(*) FROM tasks WHERE created_at > $1 GROUP BY kind", since_s
        )
        completions = {
            row[0]: (int(row[1]), None if row[2] is None else float(row[2]))
            for row in await tx.fetch(
                "SELECT kind, count(*), avg(run_s) FROM task_outcomes"
                " WHERE finished_at > $1 AND kind IS NOT NULL GROUP BY kind",
                since_s,
            )
        }
        loads = []
        for kind, concurrency in registered.items():
            queue = queues.get(kind)
            done, mean_task_s = completions.get(kind, (0, None))
            arrivals_per_s = arrivals.get(kind, 0) / bounds.window_s
            oldest = await _oldest_waiting(tx, kind, now_s)
            loads.append(
                KindLoad(
                    kind=kind,
                    ready=None if queue is None else queue.ready,
                    consumers=None if queue is None else queue.consumers,
                    unacked=unacked.get(kind, 0),
                    oldest_ready_age_s=0.0 if oldest is None else max(0.0, now_s - oldest),
                    arrivals_per_s=arrivals_per_s,
                    completions_per_s=done / bounds.window_s,
                    mean_task_s=mean_task_s,
                    concurrency=concurrency,
                    desired_workers=desired_workers(
                        arrivals_per_s=arrivals_per_s,
                        mean_task_s=mean_task_s,
                        ready=0 if queue is None else queue.ready,
                        unacked=unacked.get(kind, 0),
                        concurrency=concurrency,
                        bounds=bounds,
                    ),
                )
            )
        return loads

    return await database.read(read)


async def registered_kinds(database: Database) -> list[str]:
    return list(await database.read(kinds.registered))


async def count_queue(channel: Channel, kind: str) -> QueueCount | None:
    """The broker's figures of ``kind``'s queues, one per priority (None: no such queue, and
    the channel is closed: the caller opens another)."""
    counts: list[QueueCount | None] = []
    for priority in reversed(PRIORITIES):  # normal first: every version declares it
        try:
            ok = await channel.queue_declare(task_queue(kind, priority), passive=True)
        except WireError:
            break
        counts.append(QueueCount(ready=ok.message_count or 0, consumers=ok.consumer_count or 0))
    return combined(counts)


def combined(levels: Iterable[QueueCount | None]) -> QueueCount | None:
    """A kind's figures from those of its priorities' queues: the ready messages of all,
    the consumers of the busiest (each worker consumes every level); None if none exists."""
    found = [count for count in levels if count is not None]
    if not found:
        return None
    return QueueCount(
        ready=sum(count.ready for count in found),
        consumers=max(count.consumers for count in found),
    )


async def _by_kind(tx: Transaction, sql: str, *args: object) -> dict[str, int]:
    return {row[0]: int(row[1]) for row in await tx.fetch(sql, *args)}


async def _oldest_waiting(tx: Transaction, kind: str, now_s: float) -> float | None:
    """When the oldest task of ``kind`` that waits in its queue (no live lease) was created.

    Walks the (kind, state, created_at) index from the oldest; it passes over
    at most the tasks workers hold (their prefetch).
    """
    placeholders = ", ".join(f"${n}" for n in range(3, 3 + len(WAITING_STATES)))
    return await tx.fetchval(
        "SELECT created_at FROM tasks t WHERE t.kind = $1"
        f" AND t.state IN ({placeholders}) AND NOT EXISTS (SELECT 1 FROM worker_claims c"
        " WHERE c.scope = 'task' AND c.item_id = t.task_id AND c.until_s >= $2)"
        " ORDER BY t.created_at LIMIT 1",
        kind,
        now_s,
        *WAITING_STATES,
    )


class AutoscaleSignal:
    """Keeps the autoscaling gauges of ``gateway.metrics`` fresh, every ``interval_s``.

    ``start(connection)`` is attached to the broker link and starts refreshing;
    while the broker is away later, the store's figures are still refreshed
    (ready and consumers stay as last seen).
    """

    def __init__(self, database: Database, bounds: Bounds, *, interval_s: float) -> None:
        self._database = database
        self._bounds = bounds
        self._interval_s = interval_s
        self._channel: RobustChannel | None = None
        self._task: asyncio.Task[None] | None = None
        self.last: list[KindLoad] = []

    async def start(self, connection: WireConnection) -> None:
        if self._channel is None:
            self._channel = await connection.open_channel(_nothing_to_declare)
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="autoscale-signal")

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        await close_channels(self._channel)
        self._channel = None

    async def _run(self) -> None:
        while True:
            try:
                await self.refresh()
            except DatabaseError as exc:
                logger.warning("autoscaling signal not refreshed (%s)", exc)
            await asyncio.sleep(self._interval_s)

    async def refresh(self) -> list[KindLoad]:
        queues: dict[str, QueueCount | None] = {}
        for kind in await registered_kinds(self._database):
            queues[kind] = await self._count(kind)
        self.last = await measure(self._database, queues, self._bounds)
        metrics.set_autoscaling(self.last)
        return self.last

    async def _count(self, kind: str) -> QueueCount | None:
        raw = self._channel.raw if self._channel is not None else None
        if raw is None or raw.is_closed:
            return None
        return await count_queue(raw, kind)


async def _nothing_to_declare(channel: Channel) -> None:
    pass
