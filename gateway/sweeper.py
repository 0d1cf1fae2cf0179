"""The sweeper: removes upload directories whose upload was never accepted, and (with a
``Retention``, gateway/retention.py) finished tasks past their retention.

An upload writes its file under ``STORAGE_DIR/<task_id>/`` before the
transaction that accepts it; a web process killed in between leaves a
directory without a task. Every ``interval_s`` the sweeper removes directories
untouched for ``grace_s`` whose task does not exist. The grace covers an upload
still arriving (its directory changes as the file is written) and one whose
transaction is committing; a task that exists keeps its directory. Retention
runs in the same round, after the orphans.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

from infra.database import Database, DatabaseError, Transaction

from .retention import Retention

logger = logging.getLogger(__name__)


class OrphanSweeper:
    """``start()`` a periodic sweep of ``storage_dir``; ``sweep()`` runs one."""

    def __init__(
        self,
        database: Database,
        storage_dir: Path,
        *,
        grace_s: float,
        interval_s: float,
        retention: Retention | None = None,
    ) -> None:
        self._database = database
        self._storage_dir = storage_dir
        self._grace_s = grace_s
        self._interval_s = interval_s
        self._retention = retention
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="orphan-sweeper")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self.sweep()
                if self._retention is not None:
                    await self._retention.sweep()
            except (DatabaseError, OSError) as exc:
                logger.warning("sweep failed (%s); trying again later", exc)
            await asyncio.sleep(self._interval_s)

    async def sweep(self) -> list[str]:
        """Remove the directories of uploads never accepted; their names."""
        candidates = await asyncio.to_thread(self._quiet_directories, time.time() - self._grace_s)
        if not candidates:
            return []
        known = await self._database.read(lambda tx: _existing_tasks(tx, candidates))
        orphans = [name for name in candidates if name not in known]
        for name in orphans:
            await asyncio.to_thread(shutil.rmtree, self._storage_dir / name, True)
        if orphans:
            logger.info("removed %d upload directories without a task", len(orphans))
        return orphans

    def _quiet_directories(self, before: float) -> list[str]:
        """Directories of ``storage_dir`` whose newest change is older than ``before``."""
        if not self._storage_dir.is_dir():
            return []
        quiet = []
        for entry in self._storage_dir.iterdir():
            try:
                if entry.is_dir() and _last_change(entry) < before:
                    quiet.append(entry.name)
            except FileNotFoundError:  # removed while we looked
                continue
        return quiet


def _last_change(directory: Path) -> float:
    # A file being written changes its own mtime, not its directory's.
    return max([directory.stat().st_mtime, *(p.stat().st_mtime for p in directory.iterdir())])


async def _existing_tasks(tx: Transaction, task_ids: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for task_id in task_ids:
        if await tx.fetchval("SELECT 1 FROM tasks WHERE task_id = $1", task_id) is not None:
            found.add(task_id)
    return found
