"""The stuck-task watchdog: puts back in the queue the tasks of a worker that stopped.

Workers hold a lease on every task delivered to them (``workers.claims``,
renewed every third of ``TASK_LEASE_S``). A worker that is SIGSTOPped, paused
or cut off keeps its deliveries unacked for as long as the broker thinks its
connection lives (minutes with TCP and heartbeats), but its leases run out
within one lease. Every third of a lease this watchdog (in every web process)
takes each expired claim over and, in one transaction, records a ``stuck``
event on the task's stream and puts the task's message (kept with the claim)
in the outbox, which the relay publishes at once. So the task is back in its
queue within about 1.4 leases of its worker stopping.

Exactly once still holds: the copy that reaches another worker finds the
claim taken over and runs the task (or republishes an outcome already
recorded); the stopped worker, if it runs again, finds its claim gone and
acks its delivery without starting or finishing the task; the original
delivery, redelivered once the broker gives up on that worker, finds the
task done. Two web processes sweeping at once take each claim once (the
take-over matches the lease it saw).
"""

from __future__ import annotations

import asyncio
import logging
import time

from infra.background import cancel_and_wait
from infra.database import Database, DatabaseError, Transaction
from workers import claims
from workers.messages import StatusEvent, encoder, new_event
from workers.topology import (
    ATTEMPT_HEADER,
    TASK_MESSAGE_TYPE,
    TASKS_EXCHANGE,
    task_routing_key,
)

from .announce import announce_recorded
from .metrics import TASKS_STUCK, kind_label
from .outbox import OutboxEntry, add_again
from .outbox_relay import OutboxRelay
from .publisher import Publisher
from .store import StoredEvent
from .task_store import record_events

logger = logging.getLogger(__name__)

# The claims scope of tasks (workers/outcomes.py).
TASK_SCOPE = "task"
# Claims taken over per transaction; more wait for the next round, a third of a lease later.
BATCH = 200


class StuckTaskSweeper:
    """``start()`` a sweep every third of ``lease_s``; ``sweep()`` runs one."""

    def __init__(
        self,
        database: Database,
        relay: OutboxRelay,
        publisher: Publisher,
        *,
        lease_s: float,
        name: str,
    ) -> None:
        self._database = database
        self._relay = relay
        self._publisher = publisher
        self._interval_s = max(lease_s / 3, 0.1)
        self._name = name
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="stuck-task-sweeper")

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await self.sweep()
            except DatabaseError as exc:
                logger.warning("stuck-task sweep failed (%s); trying again later", exc)

    async def sweep(self) -> list[str]:
        """Put back every task whose lease ran out; their ids."""
        now_s = time.time()
        taken = await self._database.write(lambda tx: self._take_over(tx, now_s))
        if not taken:
            return []
        self._relay.wake()
        for event, stored in taken:
            TASKS_STUCK.labels(kind_label(event.kind)).inc()
            if stored is not None:
                await announce_recorded(self._publisher, stored)
        logger.warning(
            "%d tasks were stuck (their workers stopped renewing their leases); queued again: %s",
            len(taken),
            ", ".join(event.task_id for event, _ in taken),
        )
        return [event.task_id for event, _ in taken]

    async def _take_over(
        self, tx: Transaction, now_s: float
    ) -> list[tuple[StatusEvent, StoredEvent | None]]:
        taken = []
        for claim in await claims.expired(tx, TASK_SCOPE, now_s, BATCH):
            if not await claims.take_over(tx, TASK_SCOPE, claim, self._name):
                continue
            held = claim.held
            event = new_event(
                held.kind,
                claim.item_id,
                "stuck",
                held.attempt,
                error=f"its worker ({claim.holder}) stopped renewing its lease; queued again",
            )
            (result,) = await record_events(tx, [(event, encoder.encode(event))])
            await add_again(
                tx,
                OutboxEntry(
                    message_id=claim.item_id,
                    exchange=TASKS_EXCHANGE,
                    routing_key=task_routing_key(held.kind, held.priority),
                    body=held.body,
                    message_type=TASK_MESSAGE_TYPE,
                    headers={ATTEMPT_HEADER: held.attempt},
                ),
            )
            # A task already ended (its outcome published, its claim not yet released) has
            # no stuck event: terminal is final. Its copy changes nothing.
            taken.append((event, result if isinstance(result, StoredEvent) else None))
        return taken
