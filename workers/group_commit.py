"""Group commit: writes that arrive together share one transaction.

A busy worker finishes many tasks at once; one commit per batch instead of
one per task keeps the store's write lock (SQLite's is one per file) free
for everyone else sharing it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from infra.database import Database, Transaction

logger = logging.getLogger(__name__)

T = TypeVar("T")
Op = Callable[[Transaction], Awaitable[Any]]


class GroupCommit:
    """Runs ``await group.write(op)`` calls in batches, one transaction per batch.

    An op must not raise for its own data: a batch commits or fails as a whole.
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        self._pending: list[tuple[Op, asyncio.Future[Any]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def write(self, op: Callable[[Transaction], Awaitable[T]]) -> T:
        """``op``'s result once the batch holding it is committed."""
        result: T = await self.submit(op)
        return result

    def submit(self, op: Op) -> asyncio.Future[Any]:
        """Queue ``op`` for the next batch; the future is its result (nobody need await it)."""
        future = asyncio.get_running_loop().create_future()
        future.add_done_callback(_retrieve)
        self._pending.append((op, future))
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush())
        return future

    async def drain(self) -> None:
        """Wait until every op queued so far is committed or failed."""
        while self._flusher is not None:
            await asyncio.shield(self._flusher)

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []

                async def run_all(
                    tx: Transaction, batch: list[tuple[Op, Any]] = batch
                ) -> list[Any]:
                    return [await op(tx) for op, _ in batch]

                try:
                    results = await self._db.write(run_all)
                except Exception as exc:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                else:
                    for (_, future), result in zip(batch, results, strict=True):
                        if not future.done():
                            future.set_result(result)
        finally:
            self._flusher = None


def _retrieve(future: asyncio.Future[Any]) -> None:
    # A release nobody waits for may fail (the lease then expires on its own); mark it seen.
    if not future.cancelled():
        future.exception()
