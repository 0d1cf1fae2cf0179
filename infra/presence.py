"""Presence: which worker and rpc processes are up, from heartbeat rows in the shared store.

Each long-running process keeps one row (``Heartbeat``): its name, host, pid,
start time, when it was last seen, and what it reports about itself (a JSON
object: the kinds it runs and the tasks running now, the methods it serves and
their latency). It rewrites the row every ``PRESENCE_INTERVAL_S`` and deletes
it on a clean stop; a process that died is counted gone once its row is older
than ``timeout_s`` (``online``) and its row is deleted a day later by whoever
beats next.

Why the store and not a broadcast on the broker: every process already has
it, a gateway that just started reads who is up at once (a broadcast would
wait a beat), a page on any gateway sees the same, and it needs no exchange,
queue or permission per process. The cost: one small upsert per process per
interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from .background import cancel_and_wait
from .database import Database, DatabaseError, Migration, Transaction

logger = logging.getLogger(__name__)

COMPONENT = "presence"
MIGRATIONS: list[Migration] = [
    "CREATE TABLE IF NOT EXISTS presence ("
    " name TEXT PRIMARY KEY, role TEXT NOT NULL, host TEXT NOT NULL, pid BIGINT NOT NULL,"
    " started_at DOUBLE PRECISION NOT NULL, seen_at DOUBLE PRECISION NOT NULL,"
    " report TEXT NOT NULL)",
]
Role = Literal["worker", "rpc"]
# Rows of processes that died without deleting theirs are dropped after this long.
KEEP_GONE_S = 86_400.0


@dataclass(frozen=True, slots=True)
class Present:
    """A process's last heartbeat."""

    name: str
    role: str
    host: str
    pid: int
    started_at: float
    seen_at: float
    report: dict[str, Any]


class Heartbeat:
    """Keeps this process's presence row fresh; ``await start()``, ``await close()``.

    ``report`` is called at every beat: what the process says about itself now
    (JSON-encodable).
    """

    def __init__(
        self,
        database: Database,
        role: Role,
        report: Callable[[], dict[str, Any]],
        *,
        interval_s: float,
        name: str | None = None,
    ) -> None:
        self._database = database
        self.role = role
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.name = name or f"{role}@{self.host}:{self.pid}"
        self.started_at = time.time()
        self._report = report
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._database.migrate(COMPONENT, MIGRATIONS)
        await self.beat()
        self._task = asyncio.create_task(self._run(), name="presence-heartbeat")

    async def beat(self) -> None:
        now = time.time()
        row = (
            self.name,
            self.role,
            self.host,
            self.pid,
            self.started_at,
            now,
            json.dumps(self._report(), separators=(",", ":")),
        )

        async def upsert(tx: Transaction) -> None:
            await tx.execute(
                "INSERT INTO presence (name, role, host, pid, started_at, seen_at, report)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (name) DO UPDATE SET"
                " role = excluded.role, host = excluded.host, pid = excluded.pid,"
                " started_at = excluded.started_at, seen_at = excluded.seen_at,"
                " report = excluded.report",
                *row,
            )
            await tx.execute("DELETE FROM presence WHERE seen_at < $1", now - KEEP_GONE_S)

        await self._database.write(upsert)

    async def close(self) -> None:
        """Stop beating and delete the row: a clean stop is gone at once, not after a timeout."""
        await cancel_and_wait(self._task)
        self._task = None
        with contextlib.suppress(DatabaseError):
            await self._database.write(
                lambda tx: tx.execute("DELETE FROM presence WHERE name = $1", self.name)
            )

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await self.beat()
            except DatabaseError as exc:  # the next beat tries again; a long outage reads as gone
                logger.warning("presence heartbeat not written: %s", exc)


async def online(tx: Transaction, *, seen_after: float) -> list[Present]:
    """The processes whose last beat came after ``seen_after``, by role and name."""
    rows = await tx.fetch(
        "SELECT name, role, host, pid, started_at, seen_at, report FROM presence"
        " WHERE seen_at > $1 ORDER BY role, name",
        seen_after,
    )
    return [
        Present(
            row[0], row[1], row[2], int(row[3]), float(row[4]), float(row[5]), json.loads(row[6])
        )
        for row in rows
    ]
