"""The outbox: messages the gateway has accepted to publish, kept in the store until confirmed.

Accepting work (an upload, an order) writes its rows and its message here in
one transaction (``add_to_outbox``), so the answer to the client and the
message are one fact: committed, both exist; not committed, neither does.
The relay (``gateway/outbox_relay.py``) publishes what is here and deletes
each entry once the broker has confirmed it.

An entry is claimed by one relay for a lease (``claimed_by``, ``claimed_until``),
so the relays of several gateway processes share the work; a relay that dies
holding a claim loses it when the lease runs out, and another one publishes the
entry. The id is the message's ``message_id`` (a task or order id), by which
every consumer drops a second copy: a relay that loses its lease mid-publish
can cause one.

An entry may wait for a time (``not_before``: a delayed or scheduled task). It
is due, and claimed, from then on: its ``next_attempt_at`` starts there, on the
index the relay reads, and the relay sleeps until the earliest one. Until then
it is no message waiting for the broker: ``OUTBOX_MAX_PENDING`` and the pending
gauge count due entries only.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from infra.database import Database, Dialect, Migration, Transaction
from workers.messages import TaskMessage, encoder
from workers.topology import (
    ATTEMPT_HEADER,
    TASK_MESSAGE_TYPE,
    TASKS_EXCHANGE,
    Priority,
    task_routing_key,
)

from .errors import HttpError

OUTBOX_MIGRATIONS: Sequence[Migration] = [
    "CREATE TABLE outbox ("
    " message_id TEXT PRIMARY KEY,"
    " exchange TEXT NOT NULL,"
    " routing_key TEXT NOT NULL,"
    " body BYTEA NOT NULL,"
    " message_type TEXT NOT NULL,"
    " headers BYTEA,"  # JSON of the AMQP headers, or NULL
    " created_at DOUBLE PRECISION NOT NULL,"
    " attempts BIGINT NOT NULL DEFAULT 0,"
    " next_attempt_at DOUBLE PRECISION NOT NULL,"
    " claimed_by TEXT,"
    " claimed_until DOUBLE PRECISION,"
    " last_error TEXT"
    ");"
    "CREATE INDEX outbox_due ON outbox (next_attempt_at)",
    # 2: delayed entries. Until not_before they do not count against OUTBOX_MAX_PENDING.
    "ALTER TABLE outbox ADD COLUMN not_before DOUBLE PRECISION NOT NULL DEFAULT 0;"
    "CREATE INDEX outbox_not_before ON outbox (not_before)",
]


# What a client refused for a full outbox is told to wait: the broker has been away a while.
OUTBOX_RETRY_AFTER_S = 5


class OutboxFull(Exception):
    """The outbox holds its bound of unpublished messages: take no more work now."""


def outbox_full(exc: OutboxFull) -> HttpError:
    """503 + Retry-After for a request refused because the outbox is full."""
    return HttpError(
        503,
        "outbox_full",
        f"not accepted, nothing stored: {exc}; retry later",
        headers={"Retry-After": str(OUTBOX_RETRY_AFTER_S)},
    )


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One message to publish (persistent, confirmed, mandatory, with ``message_id``)."""

    message_id: str
    exchange: str
    routing_key: str
    body: bytes
    message_type: str
    headers: dict[str, Any] | None = None
    created_at: float = 0.0
    attempts: int = 0
    # Unix time before which it is not published (0: at once).
    not_before: float = 0.0


def task_entry(message: TaskMessage, priority: Priority, not_before: float = 0.0) -> OutboxEntry:
    """The outbox entry that publishes ``message`` to its kind's queue of ``priority``."""
    return OutboxEntry(
        message_id=message.task_id,
        exchange=TASKS_EXCHANGE,
        routing_key=task_routing_key(message.kind, priority),
        body=encoder.encode(message),
        message_type=TASK_MESSAGE_TYPE,
        headers={ATTEMPT_HEADER: 1},
        not_before=not_before,
    )


class OutboxScheduler:
    """Keeps delayed tasks of a ``workers.TaskSubmitter`` in the outbox of ``database``
    (the store the gateways share: their relays publish them when due)."""

    def __init__(self, database: Database, *, max_pending: int) -> None:
        self._database = database
        self._max_pending = max_pending

    @classmethod
    async def open(cls, database: Database, *, max_pending: int = 10_000) -> OutboxScheduler:
        await database.migrate("outbox", OUTBOX_MIGRATIONS)
        return cls(database, max_pending=max_pending)

    async def schedule(self, message: TaskMessage, priority: Priority, run_at: float) -> None:
        entry = task_entry(message, priority, not_before=run_at)
        await self._database.write(
            lambda tx: add_to_outbox(tx, entry, max_pending=self._max_pending)
        )


async def add_to_outbox(tx: Transaction, entry: OutboxEntry, *, max_pending: int) -> None:
    """Add ``entry`` in the caller's transaction; OutboxFull if ``max_pending`` wait already.

    The count and the insert are one transaction: exact on SQLite (one writer);
    on PostgreSQL concurrent accepts may pass the bound by their number. An
    entry not due yet is not counted, and is not refused: it waits for a time,
    not for the broker.
    """
    now = time.time()
    if entry.not_before <= now:
        pending = await pending_count(tx, now)
        if pending >= max_pending:
            raise OutboxFull(f"{pending} accepted messages wait for the broker")
    await _insert(tx, entry, "")


async def add_again(tx: Transaction, entry: OutboxEntry) -> None:
    """Add ``entry`` to publish a message again (a stuck task), past the bound; nothing if
    an entry with its id still waits (it is published anyway)."""
    await _insert(tx, entry, " ON CONFLICT (message_id) DO NOTHING")


async def _insert(tx: Transaction, entry: OutboxEntry, on_conflict: str) -> None:
    now = time.time()
    not_before = max(now, entry.not_before)
    headers = None if entry.headers is None else msgspec.json.encode(entry.headers)
    await tx.execute(
        "INSERT INTO outbox (message_id, exchange, routing_key, body, message_type, headers,"
        " created_at, next_attempt_at, not_before) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)"
        + on_conflict,
        entry.message_id,
        entry.exchange,
        entry.routing_key,
        entry.body,
        entry.message_type,
        headers,
        now,
        not_before,
    )


# Due, unclaimed (or claimed by a relay whose lease ran out) entries, oldest first.
# PostgreSQL: SKIP LOCKED so relays claiming at once take different rows; SQLite has one writer.
_CLAIM_SQL = (
    "UPDATE outbox SET claimed_by = $1, claimed_until = $2"
    " WHERE message_id IN (SELECT message_id FROM outbox"
    " WHERE next_attempt_at <= $3 AND (claimed_until IS NULL OR claimed_until < $3)"
    " ORDER BY next_attempt_at LIMIT $4{lock})"
    " AND (claimed_until IS NULL OR claimed_until < $3)"
    " RETURNING message_id, exchange, routing_key, body, message_type, headers,"
    " created_at, attempts"
)
_CLAIM: Mapping[Dialect, str] = {
    "sqlite": _CLAIM_SQL.format(lock=""),
    "postgresql": _CLAIM_SQL.format(lock=" FOR UPDATE SKIP LOCKED"),
}


async def any_due(tx: Transaction) -> bool:
    """Whether an entry could be claimed now (a read: idle relays take no write lock)."""
    now = time.time()
    found = await tx.fetchval(
        "SELECT 1 FROM outbox WHERE next_attempt_at <= $1"
        " AND (claimed_until IS NULL OR claimed_until < $1) LIMIT 1",
        now,
    )
    return found is not None


async def claim_due(
    tx: Transaction, dialect: Dialect, *, relay: str, lease_s: float, limit: int
) -> list[OutboxEntry]:
    """Claim up to ``limit`` due entries for ``relay`` until ``lease_s`` from now."""
    now = time.time()
    rows = await tx.fetch(_CLAIM[dialect], relay, now + lease_s, now, limit)
    entries = [
        OutboxEntry(
            message_id=row[0],
            exchange=row[1],
            routing_key=row[2],
            body=bytes(row[3]),
            message_type=row[4],
            headers=None if row[5] is None else msgspec.json.decode(bytes(row[5])),
            created_at=row[6],
            attempts=row[7],
        )
        for row in rows
    ]
    entries.sort(key=lambda entry: entry.created_at)
    return entries


async def mark_sent(tx: Transaction, message_ids: Sequence[str]) -> None:
    """Forget entries the broker confirmed."""
    await tx.executemany("DELETE FROM outbox WHERE message_id = $1", [(i,) for i in message_ids])


async def retry_later(tx: Transaction, failures: Sequence[tuple[str, float, str]]) -> None:
    """Release ``(message_id, next_attempt_at, error)`` entries for a later attempt."""
    await tx.executemany(
        "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = $2, last_error = $3,"
        " claimed_by = NULL, claimed_until = NULL WHERE message_id = $1",
        failures,
    )


async def release(tx: Transaction, failures: Sequence[tuple[str, str]]) -> None:
    """Release ``(message_id, error)`` entries, due again at once and no attempt counted.

    For a broker that is away: the entries are not at fault, and a count would
    stretch their backoff so that they wait long after the broker is back.
    """
    await tx.executemany(
        "UPDATE outbox SET last_error = $2, claimed_by = NULL, claimed_until = NULL"
        " WHERE message_id = $1",
        failures,
    )


async def next_due_at(tx: Transaction) -> float | None:
    """When the earliest unclaimed entry is due (perhaps past); None if there is none.

    The first row of the due index that no relay holds: claimed rows are the
    batches in flight, so this reads a handful of index entries, not the table.
    """
    value = await tx.fetchval(
        "SELECT next_attempt_at FROM outbox WHERE claimed_until IS NULL"
        " ORDER BY next_attempt_at LIMIT 1"
    )
    return None if value is None else float(value)


async def pending_count(tx: Transaction, now: float | None = None) -> int:
    """Due entries not yet confirmed by the broker."""
    now = time.time() if now is None else now
    return int(await tx.fetchval("SELECT count(*) FROM outbox WHERE not_before <= $1", now))


async def scheduled_count(tx: Transaction) -> int:
    """Entries not due yet (delayed tasks)."""
    return int(await tx.fetchval("SELECT count(*) FROM outbox WHERE not_before > $1", time.time()))


async def cancel_unsent(tx: Transaction, message_id: str) -> bool:
    """Drop the entry ``message_id`` if it is not due yet; whether it was dropped.

    For cancelling a delayed task: it is never published. A due entry is left to
    its relay (it leaves within milliseconds; its consumers skip what was cancelled).
    """
    deleted = await tx.execute(
        "DELETE FROM outbox WHERE message_id = $1 AND not_before > $2", message_id, time.time()
    )
    return deleted > 0
