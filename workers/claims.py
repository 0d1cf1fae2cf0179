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

A holder renews its leases while it works (``renew``). Leases compare wall
clocks of different hosts, so they must be long against the hosts' clock skew.
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

COMPONENT = "claims"
MIGRATIONS: list[Migration] = [
    "CREATE TABLE IF NOT EXISTS worker_claims ("
    " scope TEXT NOT NULL, item_id TEXT NOT NULL, holder TEXT NOT NULL,"
    " until_s DOUBLE PRECISION NOT NULL, PRIMARY KEY (scope, item_id))",
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


async def take(
    tx: Transaction, scope: str, key: str, holder: str, now_s: float, lease_s: float
) -> Claim:
    """Claim ``(scope, key)`` for ``holder`` unless another holder's lease is still running."""
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
        "INSERT INTO worker_claims (scope, item_id, holder, until_s) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (scope, item_id) DO UPDATE SET holder = excluded.holder,"
        " until_s = excluded.until_s"
        " WHERE worker_claims.holder = excluded.holder OR worker_claims.until_s < $5"
        " RETURNING holder",
        scope,
        key,
        holder,
        now_s + lease_s,
        now_s,
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


async def renew(
    tx: Transaction, scope: str, item_ids: list[str], holder: str, until_s: float
) -> None:
    """Extend ``holder``'s claims of ``item_ids`` to ``until_s``."""
    await tx.executemany(
        "UPDATE worker_claims SET until_s = $1 WHERE scope = $2 AND item_id = $3 AND holder = $4",
        [(until_s, scope, item_id, holder) for item_id in item_ids],
    )
