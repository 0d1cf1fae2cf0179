"""The sweeper: removes the files of uploads that were never accepted, and (with a
``Retention``, gateway/retention.py) finished tasks past their retention.

An upload stores its file under ``<task_id>/`` in the object store before the
transaction that accepts it; a web process killed in between leaves files
without a task. Every ``interval_s`` the sweeper removes the files of task
prefixes untouched for ``grace_s`` whose task does not exist. The grace covers
an upload still arriving (a local file changes as it is written; an S3 object
exists only once complete) and one whose transaction is committing; a task
that exists keeps its files. Retention runs in the same round, after the
orphans.

The multipart upload of a web process killed mid-upload is not an object yet:
S3 keeps its parts until the bucket's lifecycle rule
``AbortIncompleteMultipartUpload`` drops them (docs/design.md).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from infra.background import cancel_and_wait
from infra.database import Database, DatabaseError, Transaction
from infra.storage import Storage, StorageError

from .retention import Retention

logger = logging.getLogger(__name__)


class OrphanSweeper:
    """``start()`` a periodic sweep of ``storage``; ``sweep()`` runs one."""

    def __init__(
        self,
        database: Database,
        storage: Storage,
        *,
        grace_s: float,
        interval_s: float,
        retention: Retention | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._database = database
        self._storage = storage
        # The wall clock, as the store dates its objects (tests move it on).
        self._clock = clock
        self._grace_s = grace_s
        self._interval_s = interval_s
        self._retention = retention
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="orphan-sweeper")

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self.sweep()
                if self._retention is not None:
                    await self._retention.sweep()
            except (DatabaseError, StorageError, OSError) as exc:
                logger.warning("sweep failed (%s); trying again later", exc)
            await asyncio.sleep(self._interval_s)

    async def sweep(self) -> list[str]:
        """Remove the files of uploads never accepted; their task ids."""
        before = self._clock() - self._grace_s
        changes = await self._storage.task_last_changes()
        candidates = [task_id for task_id, changed in changes.items() if changed < before]
        if not candidates:
            return []
        known = await self._database.read(lambda tx: _existing_tasks(tx, candidates))
        orphans = [name for name in candidates if name not in known]
        for name in orphans:
            await self._storage.delete_task(name)
        if orphans:
            logger.info("removed the files of %d uploads without a task", len(orphans))
        return orphans


async def _existing_tasks(tx: Transaction, task_ids: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for task_id in task_ids:
        if await tx.fetchval("SELECT 1 FROM tasks WHERE task_id = $1", task_id) is not None:
            found.add(task_id)
    return found
