"""Retention: finished tasks are removed ``TASK_RETENTION_S`` after they ended, with everything
kept for them: their events, their upload key, their input (for a retry), the workers'
records (outcome, claim, cancel request: ``workers.task_records.forget``) and their files in
the object store.

The sweeper (gateway/sweeper.py) runs it. Each batch of at most
``TASK_RETENTION_BATCH`` tasks is one short write transaction, so recording,
uploads and cancels go on between batches: on SQLite the write lock is held
for one batch at a time, on PostgreSQL only the batch's rows are locked.
Files go after their rows' commit (``Storage.delete_task``): a crash in between
leaves files without a task, which the orphan sweep removes.

A removed task is gone: ``GET /tasks/{id}``, its stream and its files are 404,
as for a task that never existed. No tombstone is kept to tell the two apart
(it would be a second table growing with the task rate), so never a 410.
"""

from __future__ import annotations

import logging
import time

from infra.database import Database, Transaction
from infra.storage import Storage
from workers import task_records
from workers.messages import TERMINAL_STATES

from . import task_inputs

logger = logging.getLogger(__name__)

_TERMINAL = sorted(TERMINAL_STATES)
# Oldest first on the tasks_created index; a task must have ended before the cut too.
_EXPIRED_SQL = (
    "SELECT task_id FROM tasks WHERE created_at < $1 AND updated_at < $1 AND state IN ("
    + ", ".join(f"${n}" for n in range(3, 3 + len(_TERMINAL)))
    + ") ORDER BY created_at LIMIT $2"
)


class Retention:
    """``await sweep()`` removes every finished task past the retention, a batch at a time."""

    def __init__(
        self, database: Database, storage: Storage, *, retention_s: float, batch: int
    ) -> None:
        self._database = database
        self._storage = storage
        self._retention_s = retention_s
        self._batch = batch

    async def sweep(self) -> int:
        """Remove the finished tasks that ended more than the retention ago; how many."""
        cut = time.time() - self._retention_s
        removed = 0
        while True:
            task_ids = await self._database.write(lambda tx: self._remove_batch(tx, cut))
            for task_id in task_ids:
                await self._storage.delete_task(task_id)
            removed += len(task_ids)
            if len(task_ids) < self._batch:
                break
        if removed:
            logger.info("removed %d finished tasks past their retention", removed)
        return removed

    async def _remove_batch(self, tx: Transaction, cut: float) -> list[str]:
        rows = await tx.fetch(_EXPIRED_SQL, cut, self._batch, *_TERMINAL)
        task_ids = [row[0] for row in rows]
        if task_ids:
            await forget_tasks(tx, task_ids)
        return task_ids


async def forget_tasks(tx: Transaction, task_ids: list[str]) -> None:
    """Delete every row kept for ``task_ids``, in the caller's transaction."""
    rows = [(task_id,) for task_id in task_ids]
    await tx.executemany("DELETE FROM events WHERE task_id = $1", rows)
    await tx.executemany("DELETE FROM upload_keys WHERE task_id = $1", rows)
    await tx.executemany("DELETE FROM tasks WHERE task_id = $1", rows)
    await task_inputs.forget(tx, task_ids)
    await task_records.forget(tx, task_ids)
