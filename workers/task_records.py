"""The workers' records of a task in the shared store, as the gateway may touch them.

Three tables hold them: ``task_outcomes`` (each task's terminal event, the
outcome log of ``workers.outcomes``), ``worker_claims`` (who runs which task,
``workers.claims``) and ``task_cancels`` (cancels asked of running tasks).
The gateway cancels a task (``cancel``) and, past the retention, forgets it
(``forget``); it never reads or writes those tables otherwise.

How a cancel reaches the task, and why it is safe against a worker starting it
at the same moment: ``cancel`` takes the task's claim, as a worker does before
it runs a task. PostgreSQL and SQLite serialise the two takes on the claim's
primary key, so either

- the cancel wins: no worker runs the task. It records the ``cancelled`` event
  as the task's outcome, so every copy of the task message, now or later (a
  retry in its delay tier, a delayed publish), finds the outcome and is acked
  without running (``OutcomeLog.start``); or
- a worker holds the claim: the task runs. The cancel is written to
  ``task_cancels``, which the worker polls for the tasks it runs
  (``workers.cancel_watch``); the worker records the outcome, ``cancelled``
  unless the task finished first. The outcome log keeps one outcome per task,
  so a cancel racing a finish ends in exactly one terminal event.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from infra.database import Database, Migration, Transaction

from . import claims, outcomes
from .messages import StatusEvent, encoder

COMPONENT = "task_cancels"
MIGRATIONS: list[Migration] = [
    "CREATE TABLE IF NOT EXISTS task_cancels ("
    " task_id TEXT PRIMARY KEY, requested_at DOUBLE PRECISION NOT NULL)",
]
# The cancel's own claim lasts no longer than its transaction; the lease only bounds a crash.
_CANCEL_LEASE_S = 5.0

CancelResult = Literal["cancelled", "requested", "finished"]


async def migrate(database: Database) -> None:
    """Create the tables the workers keep per task (for a gateway that starts first)."""
    await database.migrate(claims.COMPONENT, claims.MIGRATIONS)
    await database.migrate(outcomes.COMPONENT, outcomes.MIGRATIONS)
    await database.migrate(COMPONENT, MIGRATIONS)


async def cancel(tx: Transaction, event: StatusEvent, *, holder: str, now_s: float) -> CancelResult:
    """Cancel ``event.task_id`` in the caller's transaction; ``event`` is its ``cancelled`` event.

    ``cancelled``: no worker runs it, and ``event`` is its outcome (the caller records
    and announces it). ``requested``: a worker runs it and will stop it. ``finished``:
    an outcome was recorded before (its event is on its way).
    """
    task_id = event.task_id
    claim = await claims.take(tx, outcomes.SCOPE, task_id, holder, now_s, _CANCEL_LEASE_S)
    if not claim.won:
        await tx.execute(
            "INSERT INTO task_cancels (task_id, requested_at) VALUES ($1, $2)"
            " ON CONFLICT (task_id) DO NOTHING",
            task_id,
            now_s,
        )
        return "requested"
    added = await tx.execute(
        "INSERT INTO task_outcomes (task_id, event) VALUES ($1, $2)"
        " ON CONFLICT (task_id) DO NOTHING",
        task_id,
        encoder.encode(event),
    )
    if added:
        await claims.release(tx, outcomes.SCOPE, task_id, holder)
        return "cancelled"
    # Recorded before, perhaps not published (its worker died): an expired claim tells the
    # next copy of the task to publish it (workers/claims.py).
    await claims.expire(tx, outcomes.SCOPE, task_id, holder)
    return "finished"


async def cancels_requested(tx: Transaction, task_ids: Sequence[str]) -> set[str]:
    """Those of ``task_ids`` whose cancel was asked while they ran."""
    if not task_ids:
        return set()
    placeholders = ", ".join(f"${n}" for n in range(1, len(task_ids) + 1))
    rows = await tx.fetch(
        f"SELECT task_id FROM task_cancels WHERE task_id IN ({placeholders})", *task_ids
    )
    return {row[0] for row in rows}


async def forget(tx: Transaction, task_ids: Sequence[str]) -> None:
    """Remove every record the workers keep of ``task_ids`` (finished tasks past retention)."""
    rows = [(task_id,) for task_id in task_ids]
    await tx.executemany("DELETE FROM task_outcomes WHERE task_id = $1", rows)
    await tx.executemany("DELETE FROM task_cancels WHERE task_id = $1", rows)
    await tx.executemany(
        f"DELETE FROM worker_claims WHERE scope = '{outcomes.SCOPE}' AND item_id = $1", rows
    )
