"""The outcome log: each finished task's terminal event and who runs which task, in the store.

Before running a task, a worker claims it (``workers.claims``, scope
``task``) in the shared store; it records the terminal event before
publishing it and releases the claim after. So any copy of a task message, a
redelivery or a second publish, on any host:

- waits while another worker holds the task (running, or publishing);
- changes nothing and publishes nothing once the outcome went out;
- republishes the recorded event (same ``event_id``) if the worker that
  recorded it died before its claim was released, instead of running again.

A worker claims a task as soon as it is delivered (prefetched tasks too) and
renews all its leases in one statement every third of a lease. A worker that
stops (SIGSTOP, a VM paused, a host cut off) loses them: a watchdog
(``gateway/stuck.py``) takes an expired claim over and publishes the task
again. Once the worker runs again it acts on a task only while its own
lease is unexpired by its own clock (``still_holds``), asks the store
otherwise, and records an outcome only under its own claim (``record``), so a
task taken over is neither started again nor finished twice.

Claims and outcomes are group-committed (``GroupCommit``), and a release is
not waited for: a lost release only delays a later copy until the lease ends.
The table was ``STORAGE_DIR/.outcomes.sqlite3`` per host until issue 15;
``import_legacy`` moves such a file's rows into the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from infra.background import cancel_and_wait
from infra.database import Database, Migration, Transaction

from . import claims
from .group_commit import GroupCommit
from .messages import StatusEvent, Undecodable, decode_message, encoder, event_decoder
from .status import signed

logger = logging.getLogger(__name__)

COMPONENT = "outcomes"
MIGRATIONS: list[Migration] = [
    # The schema of the per-host file, so a store made from that file is adopted as it is.
    "CREATE TABLE IF NOT EXISTS task_outcomes (task_id TEXT PRIMARY KEY, event BYTEA NOT NULL)",
    # 2: completions per kind and their run time, for the autoscaling signal (issue 18).
    "ALTER TABLE task_outcomes ADD COLUMN kind TEXT;"
    "ALTER TABLE task_outcomes ADD COLUMN finished_at DOUBLE PRECISION;"
    "ALTER TABLE task_outcomes ADD COLUMN run_s DOUBLE PRECISION;"
    "CREATE INDEX task_outcomes_finished ON task_outcomes (finished_at)",
]
LEGACY_FILE_NAME = ".outcomes.sqlite3"
SCOPE = "task"
# How often a copy of a task this worker holds asks again.
LOCAL_POLL_S = 0.2


@dataclass(frozen=True, slots=True)
class Start:
    """What to do with a task message: ``run`` it, ``republish`` an outcome, or neither."""

    run: bool = False
    republish: StatusEvent | None = None
    # Another worker holds the task until then: wait, then ask again.
    wait_until_s: float | None = None

    @property
    def done(self) -> bool:
        """Finished and published: ack the copy, publish nothing."""
        return not self.run and self.republish is None and self.wait_until_s is None


class OutcomeLog:
    """Open with ``await OutcomeLog.open(db, holder=...)``; ``await log.close()`` when done."""

    def __init__(self, db: Database, *, holder: str, lease_s: float) -> None:
        self._db = db
        self._group = GroupCommit(db)
        self.holder = holder
        self.lease_s = lease_s
        self._renewer: asyncio.Task[None] | None = None
        # The tasks this worker holds, each with the end of its lease as last written (by this
        # host's clock): a copy that reaches this same worker must wait too, and only these
        # leases are renewed.
        self._held: dict[str, float] = {}
        # Held tasks whose claim another took over: they must not run or finish here.
        self._lost: set[str] = set()

    @classmethod
    async def open(
        cls, db: Database, *, holder: str, lease_s: float = 30.0, legacy_dir: Path | None = None
    ) -> OutcomeLog:
        """The log in ``db``, with the outcomes of ``legacy_dir/.outcomes.sqlite3`` moved in."""
        await db.migrate(claims.COMPONENT, claims.MIGRATIONS)
        await db.migrate(COMPONENT, MIGRATIONS)
        if legacy_dir is not None:
            await import_legacy(db, legacy_dir)
        log = cls(db, holder=holder, lease_s=lease_s)
        log._renewer = asyncio.get_running_loop().create_task(log._renew_leases())
        return log

    async def start(self, task_id: str, held: claims.Held | None = None) -> Start:
        """Claim ``task_id`` unless another worker holds it; what this copy must do.

        ``held``: the task's message, kept with the claim so that a watchdog can
        publish the task again if this worker stops. After ``run`` or
        ``republish``, call ``release`` once the outcome is published or the
        message is back in the queue.
        """
        if task_id in self._held:
            return Start(wait_until_s=time.time() + LOCAL_POLL_S)
        self._held[task_id] = time.time() + self.lease_s
        self._lost.discard(task_id)
        try:
            decision = await self._group.write(self._start(task_id, held))
        except BaseException:
            self._held.pop(task_id, None)
            raise
        if not decision.run and decision.republish is None:
            self._held.pop(task_id, None)
        return decision

    def _start(
        self, task_id: str, held: claims.Held | None
    ) -> Callable[[Transaction], Awaitable[Start]]:

        async def start(tx: Transaction) -> Start:
            now_s = time.time()
            claim = await claims.take(tx, SCOPE, task_id, self.holder, now_s, self.lease_s, held)
            if not claim.won:
                return Start(wait_until_s=claim.until_s)
            recorded = await _recorded(tx, task_id)
            if recorded is None:
                return Start(run=True)
            if claim.had_prior:
                return Start(republish=recorded)
            await claims.release(tx, SCOPE, task_id, self.holder)
            return Start()

        return start

    async def get(self, task_id: str) -> StatusEvent | None:
        """The recorded terminal event of ``task_id``, or None."""
        return await self._db.read(lambda tx: _recorded(tx, task_id))

    def surely_holds(self, task_id: str) -> bool:
        """Whether this worker's lease of ``task_id`` is sure to run a third of a lease more,
        by this host's clock (no store access)."""
        until_s = self._held.get(task_id)
        return (
            until_s is not None
            and task_id not in self._lost
            and until_s - time.time() > self.lease_s / 3
        )

    async def still_holds(self, task_id: str) -> bool:
        """Whether this worker still holds ``task_id``; asks the store only when its lease
        may have run out (this worker stopped, or renewals failed)."""
        if self.surely_holds(task_id):
            return True
        if task_id not in self._held or task_id in self._lost:
            return False
        until_s = time.time() + self.lease_s
        kept = await self._group.write(
            lambda tx: claims.renew(tx, SCOPE, [task_id], self.holder, until_s)
        )
        self._note_renewed([task_id], kept, until_s)
        return task_id in kept

    async def record(self, event: StatusEvent, *, run_s: float | None = None) -> StatusEvent | None:
        """Record ``event`` as its task's outcome unless one is; the outcome, once committed.

        A worker whose lease ran out may find another's outcome recorded: it
        publishes that one, so the task still has a single terminal event.
        None: another took the task over (this worker's lease ran out); its
        result is dropped, the task finishes there.
        """
        event = signed(event, self.holder)  # a copy that republishes it names who ran it
        body = encoder.encode(event)
        until_s = time.time() + self.lease_s

        async def record(tx: Transaction) -> StatusEvent | None:
            if not await claims.holds(tx, SCOPE, event.task_id, self.holder):
                return None
            # Renewed in the same commit: a watchdog that saw the lease run out must not take
            # the claim over now (its update only matches the lease it saw).
            await claims.renew(tx, SCOPE, [event.task_id], self.holder, until_s)
            added = await tx.execute(
                "INSERT INTO task_outcomes (task_id, event, kind, finished_at, run_s)"
                " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (task_id) DO NOTHING",
                event.task_id,
                body,
                event.kind,
                event.timestamp,
                run_s,
            )
            return event if added else (await _recorded(tx, event.task_id) or event)

        outcome = await self._group.write(record)
        if outcome is None:
            self._lost.add(event.task_id)
        return outcome

    async def known(self, task_id: str) -> bool:
        """Whether ``task_id`` has a recorded outcome or a holder."""

        async def known(tx: Transaction) -> bool:
            found = await tx.fetchval(
                "SELECT 1 FROM task_outcomes WHERE task_id = $1 UNION ALL"
                " SELECT 1 FROM worker_claims WHERE scope = $2 AND item_id = $1",
                task_id,
                SCOPE,
            )
            return found is not None

        return await self._db.read(known)

    def release(self, task_id: str, *, settled: bool) -> None:
        """Give the task's claim up; committed with the next batch, not waited for.

        ``settled``: its message was acked with everything published. Otherwise
        (the message goes back to the queue) the claim is only expired, so a
        copy that finds an outcome recorded publishes it.
        """
        self._held.pop(task_id, None)
        self._lost.discard(task_id)
        if settled:
            self._group.submit(lambda tx: claims.release(tx, SCOPE, task_id, self.holder))
        else:
            self._group.submit(lambda tx: claims.expire(tx, SCOPE, task_id, self.holder))

    async def close(self) -> None:
        await cancel_and_wait(self._renewer)
        self._renewer = None
        await self._group.drain()

    async def _renew_leases(self) -> None:
        """Extend this worker's claims every third of a lease, for as long as it runs."""
        while True:
            await asyncio.sleep(self.lease_s / 3)
            held = [task_id for task_id in self._held if task_id not in self._lost]
            if not held:
                continue
            until_s = time.time() + self.lease_s

            async def renew(
                tx: Transaction, held: list[str] = held, until_s: float = until_s
            ) -> set[str]:
                return await claims.renew(tx, SCOPE, held, self.holder, until_s)

            try:
                kept = await self._group.write(renew)
            except Exception as exc:  # the next round tries again; the lease has two more
                logger.warning("could not renew the task leases: %s", exc)
                continue
            self._note_renewed(held, kept, until_s)

    def _note_renewed(self, asked: list[str], kept: set[str], until_s: float) -> None:
        lost = []
        for task_id in asked:
            if task_id not in self._held:
                continue  # released meanwhile
            if task_id in kept:
                self._held[task_id] = until_s
            elif task_id not in self._lost:
                self._lost.add(task_id)
                lost.append(task_id)
        if lost:
            logger.warning(
                "lost the lease of %d tasks (this worker was stopped longer than its lease?);"
                " they were taken over and will not run or finish here: %s",
                len(lost),
                ", ".join(lost),
            )


async def _recorded(tx: Transaction, task_id: str) -> StatusEvent | None:
    body = await tx.fetchval("SELECT event FROM task_outcomes WHERE task_id = $1", task_id)
    if body is None:
        return None
    try:
        return decode_message(event_decoder, body, "recorded outcome")
    except Undecodable:
        return None  # a hand-edited row: run the task again


async def import_legacy(db: Database, storage_dir: Path, *, chunk: int = 1_000) -> int:
    """Move the outcomes of ``STORAGE_DIR/.outcomes.sqlite3`` (before issue 15) into ``db``.

    The file is renamed ``*.imported`` afterwards; outcomes already in ``db``
    win. Safe when several workers of a host start together.
    """
    path = storage_dir / LEGACY_FILE_NAME
    if not path.exists():
        return 0
    await db.migrate(COMPONENT, MIGRATIONS)

    def read() -> list[tuple[str, bytes]]:
        conn = sqlite3.connect(path)
        try:
            return conn.execute("SELECT task_id, event FROM task_outcomes").fetchall()
        finally:
            conn.close()

    rows = await asyncio.to_thread(read)
    for start in range(0, len(rows), chunk):
        part = rows[start : start + chunk]

        async def insert(tx: Transaction, part: list[tuple[str, bytes]] = part) -> None:
            await tx.executemany(
                "INSERT INTO task_outcomes (task_id, event) VALUES ($1, $2)"
                " ON CONFLICT (task_id) DO NOTHING",
                part,
            )

        await db.write(insert)
    with contextlib.suppress(FileNotFoundError):  # another worker of the host was first
        path.rename(path.with_name(LEGACY_FILE_NAME + ".imported"))
    logger.info("imported %d task outcomes from %s", len(rows), path)
    return len(rows)
