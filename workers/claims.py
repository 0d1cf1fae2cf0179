"""Claims: which process is handling a message, for how long, in the shared store.

A consumer that takes a message claims ``(scope, key)`` (the task id, or the
order id for one order service) with a lease before doing anything, and
releases it once the result is recorded *and published*. So a copy of the
message that arrives on any host meanwhile finds the claim and waits instead
of doing the work in parallel, and a copy that arrives later tells from what
it finds whether the result went out:

- recorded, no claim: done and published; the copy changes nothing;
- recorded, claim expired (its holder died between recording and
  publishing): the copy takes the claim and republishes what was recorded;
- not recorded, claim expired: the holder died mid-work; the copy does it.

A holder renews its leases while it works (``renew``: one statement for all
of them). Leases compare wall clocks of different hosts, so they must be long
against the hosts' clock skew.

A task's claim also carries its message (kind, body, attempt), so a watchdog
that finds a lease expired (its holder frozen, or its host gone) can put the
task back in its queue (``expired``, ``take_over``) without waiting for the
broker to notice that the holder's connection is dead. The holder, once it
runs again, finds the claim is no longer its own and drops the task.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from infra.database import Migration, Transaction

from .metrics import MESSAGE_COPIES
from .topology import Priority

COMPONENT = "claims"
MIGRATIONS: list[Migration] = [
    "CREATE TABLE IF NOT EXISTS worker_claims ("
    " scope TEXT NOT NULL, item_id TEXT NOT NULL, holder TEXT NOT NULL,"
    " until_s DOUBLE PRECISION NOT NULL, PRIMARY KEY (scope, item_id))",
    # 2: what a watchdog needs to publish a task again (issue 18, point 4); NULL for orders.
    "ALTER TABLE worker_claims ADD COLUMN kind TEXT;"
    "ALTER TABLE worker_claims ADD COLUMN message BYTEA;"
    "ALTER TABLE worker_claims ADD COLUMN attempt BIGINT",
    # 3: the queue it came from, so a stuck high-priority task goes back to the high queue.
    "ALTER TABLE worker_claims ADD COLUMN priority TEXT",
]


# A copy of a message whose work another consumer holds asks again at least this often.
POLL_S = 1.0


class Decision(Protocol):
    @property
    def wait_until_s(self) -> float | None: ...


D = TypeVar("D", bound=Decision)


async def when_free(
    decide: Callable[[], Awaitable[D]],
    *,
    consumer: str,
    stopping: Callable[[], bool] = lambda: False,
) -> D | None:
    """``decide()`` again until it says not to wait; None if ``stopping()`` meanwhile."""
    waited = False
    while True:
        decision = await decide()
        if decision.wait_until_s is None:
            return decision
        if stopping():
            return None
        if not waited:
            MESSAGE_COPIES.labels(consumer, "waited").inc()
            waited = True
        await asyncio.sleep(min(max(decision.wait_until_s - time.time(), 0.0), POLL_S))


def new_holder(name: str) -> str:
    """A holder id unique to this process and consumer: host, pid and a random part."""
    return f"{name}@{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True, slots=True)
class Claim:
    """What ``take`` found and did."""

    won: bool
    # A claim was there before (ours, or another's that expired): its holder may have
    # recorded a result without publishing it.
    had_prior: bool
    # When the other holder's lease ends (only when not won).
    until_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Held:
    """The message a claim holds: enough to publish its task again."""

    kind: str
    body: bytes
    attempt: int
    priority: Priority = "normal"


async def take(
    tx: Transaction,
    scope: str,
    key: str,
    holder: str,
    now_s: float,
    lease_s: float,
    held: Held | None = None,
) -> Claim:
    """Claim ``(scope, key)`` for ``holder`` unless another holder's lease is still running.

    ``held``: the message the claim keeps for a watchdog (tasks only).
    """
    prior = await tx.fetchrow(
        "SELECT holder, until_s FROM worker_claims WHERE scope = $1 AND item_id = $2 FOR UPDATE",
        scope,
        key,
    )
    if prior is not None and prior[0] != holder and prior[1] >= now_s:
        return Claim(won=False, had_prior=True, until_s=float(prior[1]))
    # Two copies that both found no row race on the insert; PostgreSQL makes the second
    # wait for the first to commit, then the WHERE keeps the first's live claim.
    won = await tx.fetchval(
        "INSERT INTO worker_claims"
        " (scope, item_id, holder, until_s, kind, message, attempt, priority)"
        " VALUES ($1, $2, $3, $4, $6, $7, $8, $9)"
        " ON CONFLICT (scope, item_id) DO UPDATE SET holder = excluded.holder,"
        " until_s = excluded.until_s, kind = excluded.kind, message = excluded.message,"
        " attempt = excluded.attempt, priority = excluded.priority"
        " WHERE worker_claims.holder = excluded.holder OR worker_claims.until_s < $5"
        " RETURNING holder",
        scope,
        key,
        holder,
        now_s + lease_s,
        now_s,
        None if held is None else held.kind,
        None if held is None else held.body,
        None if held is None else held.attempt,
        None if held is None else held.priority,
    )
    if won is None:
        return Claim(won=False, had_prior=True, until_s=now_s + 1.0)
    return Claim(won=True, had_prior=prior is not None)


async def release(tx: Transaction, scope: str, key: str, holder: str) -> None:
    """Give up ``holder``'s claim of ``(scope, key)`` (nothing if another holder took it over)."""
    await tx.execute(
        "DELETE FROM worker_claims WHERE scope = $1 AND item_id = $2 AND holder = $3",
        scope,
        key,
        holder,
    )


async def expire(tx: Transaction, scope: str, key: str, holder: str) -> None:
    """End ``holder``'s lease of ``(scope, key)`` now, keeping the claim as a sign that its
    result, if recorded, may not be published."""
    await tx.execute(
        "UPDATE worker_claims SET until_s = 0 WHERE scope = $1 AND item_id = $2 AND holder = $3",
        scope,
        key,
        holder,
    )


# Ids per renewing statement: far below both backends' limit of bound parameters.
RENEW_CHUNK = 1_000


async def renew(
    tx: Transaction, scope: str, item_ids: list[str], holder: str, until_s: float
) -> set[str]:
    """Extend ``holder``'s claims of ``item_ids`` to ``until_s``; the ids it still holds.

    One statement per RENEW_CHUNK ids. An id missing from the answer was taken
    over (its lease had run out) or released: its holder must drop the work.
    """
    kept: set[str] = set()
    for start in range(0, len(item_ids), RENEW_CHUNK):
        chunk = item_ids[start : start + RENEW_CHUNK]
        placeholders = ", ".join(f"${n}" for n in range(4, 4 + len(chunk)))
        rows = await tx.fetch(
            "UPDATE worker_claims SET until_s = $1 WHERE scope = $2 AND holder = $3"
            f" AND until_s > 0 AND item_id IN ({placeholders}) RETURNING item_id",
            until_s,
            scope,
            holder,
            *chunk,
        )
        kept.update(row[0] for row in rows)
    return kept


async def holds(tx: Transaction, scope: str, key: str, holder: str) -> bool:
    """Whether ``holder`` still holds ``(scope, key)`` (locked until the transaction ends).

    Its lease may have run out: what counts is that nobody took the claim over.
    """
    found = await tx.fetchval(
        "SELECT holder FROM worker_claims WHERE scope = $1 AND item_id = $2 FOR UPDATE",
        scope,
        key,
    )
    return bool(found == holder)


@dataclass(frozen=True, slots=True)
class Expired:
    """A claim whose lease ran out while its holder still had it: the holder stopped."""

    item_id: str
    holder: str
    until_s: float
    held: Held


async def expired(tx: Transaction, scope: str, now_s: float, limit: int) -> list[Expired]:
    """Up to ``limit`` claims of ``scope`` with a message whose lease ended before ``now_s``.

    A claim its holder expired on purpose (``expire``: the message went back to
    the queue) has ``until_s = 0`` and is not among them.
    """
    rows = await tx.fetch(
        "SELECT item_id, holder, until_s, kind, message, attempt, priority FROM worker_claims"
        " WHERE scope = $1 AND until_s > 0 AND until_s < $2 AND message IS NOT NULL"
        " ORDER BY until_s LIMIT $3",
        scope,
        now_s,
        limit,
    )
    return [
        Expired(
            row[0],
            row[1],
            float(row[2]),
            Held(row[3], bytes(row[4]), int(row[5] or 1), "high" if row[6] == "high" else "normal"),
        )
        for row in rows
    ]


async def take_over(tx: Transaction, scope: str, claim: Expired, watchdog: str) -> bool:
    """Take ``claim`` from its stopped holder for ``watchdog``, which publishes it again.

    The claim is left expired (``until_s = 0``) in the watchdog's name: the
    next copy of the message takes it at once, and learns that a holder was
    there. False if the holder renewed it or another watchdog was first.
    """
    changed = await tx.execute(
        "UPDATE worker_claims SET holder = $1, until_s = 0"
        " WHERE scope = $2 AND item_id = $3 AND holder = $4 AND until_s = $5",
        watchdog,
        scope,
        claim.item_id,
        claim.holder,
        claim.until_s,
    )
    return changed == 1
