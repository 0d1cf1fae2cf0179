"""The outbox and its relay, on a real store and the session's broker."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator

import aio_pika
import pytest

from gateway.outbox import (
    OUTBOX_MIGRATIONS,
    OutboxEntry,
    OutboxFull,
    add_to_outbox,
    claim_due,
    pending_count,
)
from gateway.outbox_relay import OutboxRelay
from gateway.publisher import Publisher
from infra.database import Database, Transaction
from workers.topology import ATTEMPT_HEADER, TASK_MESSAGE_TYPE, TASKS_EXCHANGE, task_queue


@pytest.fixture
async def outbox(database: Database) -> Database:
    await database.migrate("outbox", OUTBOX_MIGRATIONS)
    return database


@pytest.fixture
async def publisher(connection) -> AsyncIterator[Publisher]:
    publisher = Publisher(queue_max_length=10_000, timeout_s=5)
    await publisher.start(connection)
    yield publisher
    await publisher.close()


def task_entry(kind: str, n: int) -> OutboxEntry:
    return OutboxEntry(
        message_id=f"{kind}-{n}",
        exchange=TASKS_EXCHANGE,
        routing_key=kind,
        body=b'{"n": %d}' % n,
        message_type=TASK_MESSAGE_TYPE,
        headers={ATTEMPT_HEADER: 1},
    )


async def add(database: Database, entries: list[OutboxEntry], max_pending: int = 10_000) -> None:
    async def write(tx: Transaction) -> None:
        for entry in entries:
            await add_to_outbox(tx, entry, max_pending=max_pending)

    await database.write(write)


def relay(database: Database, publisher: Publisher, name: str, **options: float) -> OutboxRelay:
    settings = {"lease_s": 30.0, "poll_s": 0.05, "retry_max_s": 0.5, **options}
    return OutboxRelay(database, publisher, name=name, batch=50, **settings)  # type: ignore[arg-type]


async def queued_messages(amqp_url: str, kind: str) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Every message waiting in ``kind``'s task queue (nobody consumes it), taken off it."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(task_queue(kind), passive=True)
        messages = []
        while (message := await queue.get(fail=False, no_ack=True)) is not None:
            messages.append(message)
        return messages


async def test_the_bound_refuses_an_entry_and_the_transaction_keeps_nothing(outbox):
    await outbox.migrate("side", ["CREATE TABLE side (x BIGINT)"])
    await add(outbox, [task_entry("k", n) for n in range(3)], max_pending=3)

    async def one_more(tx: Transaction) -> None:
        await tx.execute("INSERT INTO side (x) VALUES (1)")
        await add_to_outbox(tx, task_entry("k", 3), max_pending=3)

    with pytest.raises(OutboxFull):
        await outbox.write(one_more)
    assert await outbox.read(pending_count) == 3
    assert await outbox.read(lambda tx: tx.fetchval("SELECT count(*) FROM side")) == 0


async def test_entries_left_by_a_dead_relay_are_published_by_another(
    outbox, publisher, unique_name, amqp_url
):
    kind = unique_name("outbox")
    await add(outbox, [task_entry(kind, n) for n in range(5)])

    async def claim(relay: str, lease_s: float, limit: int) -> list[OutboxEntry]:
        return await outbox.write(
            lambda tx: claim_due(tx, outbox.dialect, relay=relay, lease_s=lease_s, limit=limit)
        )

    # A relay that died holding three entries, its lease over; a live one holds the other two.
    alive = await claim("alive", 3600.0, 2)
    dead = await claim("dead", -1.0, 10)
    assert len(dead) == 3 and len(alive) == 2

    published = await relay(outbox, publisher, "second").drain()

    messages = await queued_messages(amqp_url, kind)
    assert published == 3
    assert sorted(m.message_id for m in messages) == sorted(e.message_id for e in dead)
    assert all(m.delivery_mode == aio_pika.DeliveryMode.PERSISTENT for m in messages)
    assert all(m.headers[ATTEMPT_HEADER] == 1 for m in messages)
    assert all(m.type == TASK_MESSAGE_TYPE for m in messages)
    left = await outbox.read(lambda tx: tx.fetch("SELECT message_id, claimed_by FROM outbox"))
    assert sorted(left) == sorted((e.message_id, "alive") for e in alive)


async def test_relays_draining_together_publish_each_entry_once(
    outbox, publisher, unique_name, amqp_url
):
    kind = unique_name("outbox")
    entries = [task_entry(kind, n) for n in range(300)]
    await add(outbox, entries)

    await asyncio.gather(*(relay(outbox, publisher, f"r{i}").drain() for i in range(3)))

    messages = await queued_messages(amqp_url, kind)
    assert Counter(m.message_id for m in messages) == {e.message_id: 1 for e in entries}
    assert await outbox.read(pending_count) == 0


async def test_a_woken_relay_publishes_at_once_and_closing_frees_its_claims(
    outbox, publisher, unique_name, amqp_url
):
    kind = unique_name("outbox")
    # Polling once an hour: only the wake-up can make it publish within the test.
    running = relay(outbox, publisher, "woken", poll_s=3600.0)
    running.start()
    try:
        await add(outbox, [task_entry(kind, 1)])
        running.wake()
        async with asyncio.timeout(30):
            while await outbox.read(pending_count):  # noqa: ASYNC110 (no event to await)
                await asyncio.sleep(0.02)
    finally:
        await running.close()
    assert [m.message_id for m in await queued_messages(amqp_url, kind)] == [f"{kind}-1"]

    held = relay(outbox, publisher, "holder")
    await add(outbox, [task_entry(kind, 2)])
    await outbox.write(
        lambda tx: claim_due(tx, outbox.dialect, relay="holder", lease_s=3600.0, limit=10)
    )
    await held.close()
    claimed = await outbox.read(lambda tx: tx.fetchval("SELECT claimed_by FROM outbox"))
    assert claimed is None
