"""The task kinds workers run, in the store: what the autoscaling signal reports on.

Each worker records its kinds and its concurrency at start. The web process
and ``taskgate queues`` read them, so the signal covers only kinds some worker
registered (a bounded set of label values), including kinds whose workers are
all gone: a deployment scaled to zero still gets a signal.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from infra.database import Database, Migration, Transaction

COMPONENT = "task_kinds"
MIGRATIONS: list[Migration] = [
    "CREATE TABLE task_kinds (kind TEXT PRIMARY KEY, concurrency BIGINT NOT NULL,"
    " registered_at DOUBLE PRECISION NOT NULL)",
]
# Kinds reported on at most: each is a label value of several series.
MAX_KINDS = 32


async def register(database: Database, kinds: Iterable[str], concurrency: int) -> None:
    """Record that a worker runs ``kinds`` with ``concurrency`` handlers (the latest wins)."""
    await database.migrate(COMPONENT, MIGRATIONS)
    rows = [(kind, concurrency, time.time()) for kind in kinds]

    async def upsert(tx: Transaction) -> None:
        await tx.executemany(
            "INSERT INTO task_kinds (kind, concurrency, registered_at) VALUES ($1, $2, $3)"
            " ON CONFLICT (kind) DO UPDATE SET concurrency = excluded.concurrency,"
            " registered_at = excluded.registered_at",
            rows,
        )

    await database.write(upsert)


async def registered(tx: Transaction) -> dict[str, int]:
    """Kind → a worker's concurrency, for the first MAX_KINDS kinds by name."""
    rows = await tx.fetch(
        "SELECT kind, concurrency FROM task_kinds ORDER BY kind LIMIT $1", MAX_KINDS
    )
    return {row[0]: int(row[1]) for row in rows}
