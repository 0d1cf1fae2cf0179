"""Claims, the outcome log and the shop's idempotent writes, on the store itself."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from infra.database import Database
from workers import claims
from workers.messages import new_event
from workers.outcomes import OutcomeLog
from workers.shop.contracts import CartLine
from workers.shop.db import SEED_STOCK, Completion, ShopDb


@pytest.fixture
async def database(database: Database) -> Database:
    """tests/conftest.py's fresh store, on SQLite and on PostgreSQL, with the claims table."""
    await database.migrate(claims.COMPONENT, claims.MIGRATIONS)
    return database


async def take(db: Database, holder: str, now_s: float, lease_s: float = 10.0) -> claims.Claim:
    return await db.write(lambda tx: claims.take(tx, "task", "t1", holder, now_s, lease_s))


async def test_a_live_claim_keeps_others_out_until_it_expires_or_is_released(
    database: Database,
) -> None:
    assert await take(database, "a", now_s=100.0) == claims.Claim(won=True, had_prior=False)
    assert await take(database, "b", now_s=105.0) == claims.Claim(
        won=False, had_prior=True, until_s=110.0
    )
    assert (await take(database, "a", now_s=105.0)).won  # its holder may take it again
    # Expired: another takes it over, and learns that a holder was there.
    assert await take(database, "b", now_s=200.0) == claims.Claim(won=True, had_prior=True)
    await database.write(lambda tx: claims.release(tx, "task", "t1", "a"))  # not a's any more
    assert not (await take(database, "a", now_s=201.0)).won
    await database.write(lambda tx: claims.release(tx, "task", "t1", "b"))
    assert await take(database, "a", now_s=202.0) == claims.Claim(won=True, had_prior=False)


async def test_renewing_extends_only_the_holders_own_claims(database: Database) -> None:
    await take(database, "a", now_s=100.0, lease_s=1.0)
    await database.write(lambda tx: claims.renew(tx, "task", ["t1"], "b", 500.0))
    assert (await take(database, "b", now_s=102.0)).won  # a's lease ran out, b's renew did nothing
    await database.write(lambda tx: claims.renew(tx, "task", ["t1"], "b", 500.0))
    assert not (await take(database, "a", now_s=400.0)).won


async def test_a_watchdog_takes_an_expired_lease_over_once_and_its_holder_learns_it(
    database: Database,
) -> None:
    held = claims.Held("k", b'{"task_id": "t1"}', 2)
    await database.write(lambda tx: claims.take(tx, "task", "t1", "a", 100.0, 10.0, held))
    await database.write(lambda tx: claims.take(tx, "task", "t2", "a", 100.0, 10.0, held))
    # One statement renews both; t2's lease is then left to run out.
    kept = await database.write(lambda tx: claims.renew(tx, "task", ["t1", "t2"], "a", 120.0))
    assert kept == {"t1", "t2"}
    await database.write(lambda tx: claims.renew(tx, "task", ["t1"], "a", 200.0))
    (expired,) = await database.read(lambda tx: claims.expired(tx, "task", 150.0, 10))
    assert (expired.item_id, expired.holder, expired.held) == ("t2", "a", held)
    took = [
        await database.write(lambda tx, name=name: claims.take_over(tx, "task", expired, name))
        for name in ("watchdog-1", "watchdog-2")
    ]
    assert took == [True, False]  # two gateways sweeping at once: one takes it
    assert await database.read(lambda tx: claims.expired(tx, "task", 150.0, 10)) == []
    # The stopped holder, running again, learns which leases it lost.
    kept = await database.write(lambda tx: claims.renew(tx, "task", ["t1", "t2"], "a", 300.0))
    assert kept == {"t1"}
    # The copy the watchdog published takes the claim at once, knowing a holder was there.
    copy = await database.write(lambda tx: claims.take(tx, "task", "t2", "b", 151.0, 10.0, held))
    assert copy == claims.Claim(won=True, had_prior=True)


async def test_two_copies_starting_together_run_once(database: Database) -> None:
    logs = [await OutcomeLog.open(database, holder=name) for name in ("a", "b")]
    try:
        first, second = await asyncio.gather(*(log.start("t" * 32) for log in logs))
        assert sorted([first.run, second.run]) == [False, True]
        assert (second if first.run else first).wait_until_s is not None
        # The same worker asked twice (two copies it prefetched): the second waits.
        again = await logs[0].start("u" * 32), await logs[0].start("u" * 32)
        assert again[0].run and again[1].wait_until_s is not None
    finally:
        for log in logs:
            await log.close()


async def test_the_first_outcome_recorded_is_the_one_every_copy_publishes(
    database: Database,
) -> None:
    log = await OutcomeLog.open(database, holder="a")
    try:
        assert (await log.start("t" * 32)).run
        first = new_event("k", "t" * 32, "succeeded", 1, result=1)
        late = new_event("k", "t" * 32, "failed", 1, error="lost its lease, ran again")
        # Recorded naming the worker that reached it, as every copy then publishes it.
        recorded = msgspec.structs.replace(first, worker="a")
        assert await log.record(first) == recorded
        assert await log.record(late) == recorded
    finally:
        await log.close()


@pytest.fixture
async def shop(database: Database) -> ShopDb:
    return await ShopDb.open(database, holder="shop-a")


async def test_a_reservation_is_taken_once_and_a_short_one_takes_nothing(shop: ShopDb) -> None:
    lines = [CartLine("PRINT-01", 2), CartLine("MUG-01", 1)]
    first = await shop.reserve("o1", lines)
    assert first == Completion("inventory", True, "reserved 3 units")
    assert await shop.reserve("o1", lines) == first
    short = await shop.reserve("o2", [CartLine("MUG-01", 1), CartLine("PRINT-01", 2)])
    assert short == Completion("inventory", False, "out of stock: PRINT-01 (1 left, 2 wanted)")
    assert await shop.available(["MUG-01", "PRINT-01"]) == {
        "MUG-01": SEED_STOCK["MUG-01"] - 1,
        "PRINT-01": SEED_STOCK["PRINT-01"] - 2,
    }


async def test_exactly_one_part_finishes_an_order_however_often_parts_finish(
    shop: ShopDb,
) -> None:
    parts = [Completion(service, True, "done") for service in ("email", "inventory", "analytics")]
    results = [await shop.complete("o1", part) for part in parts + parts]
    assert [r.finishes_order for r in results] == [False, False, True, False, False, False]
    assert [p.service for p in results[-1].parts] == ["analytics", "email", "inventory"]


async def test_a_part_done_and_published_is_done_for_every_later_copy(
    database: Database, shop: ShopDb
) -> None:
    other = await ShopDb.open(database, holder="shop-b")
    assert (await shop.start_part("email", "o1")).run
    assert (await other.start_part("email", "o1")).wait_until_s is not None
    await shop.complete("o1", Completion("email", True, "sent"))
    await shop.end_part("email", "o1", settled=True)
    assert (await other.start_part("email", "o1")).done


async def test_a_part_recorded_by_a_holder_that_died_is_republished_by_the_next_copy(
    database: Database,
) -> None:
    dead = await ShopDb.open(database, holder="dead", lease_s=-1.0)  # a lease already run out
    assert (await dead.start_part("analytics", "o1")).run
    await dead.complete("o1", Completion("analytics", True, "recorded"))
    # ... and dies before publishing: its lease runs out.
    other = await ShopDb.open(database, holder="other")
    start = await other.start_part("analytics", "o1")
    assert start.republish is not None
    assert start.republish.parts == [Completion("analytics", True, "recorded")]
    assert not start.republish.finishes_order
