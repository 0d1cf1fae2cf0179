"""Copies of one order.created (same message id: the order id) fulfil the order once,
on the real broker and store; respx stands in for the email provider."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator

import aio_pika
import httpx
import msgspec
import pytest
import respx
from prometheus_client import REGISTRY

import rpc
from infra.database import Transaction, open_database
from workers import WorkerSettings
from workers.events import EventConsumers
from workers.shop.consumers import OrderFulfilment
from workers.shop.contracts import ORDER_CREATED, ORDER_QUEUES, ORDERS_EXCHANGE, OrderCreated
from workers.shop.db import SEED_STOCK, Completion, ShopDb
from workers.shop.mailer import Mailer

from ..helpers import eventually
from .conftest import PROVIDER, on_backend
from .test_orders import emails_for, make_order

TIMEOUT_S = 30


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request: pytest.FixtureRequest, settings: WorkerSettings) -> WorkerSettings:
    """Every test here runs with the store on SQLite and on PostgreSQL."""
    return on_backend(request, settings)


def consumed() -> dict[str, float]:
    """Order messages each queue's consumers handled and acked so far."""
    return {
        queue: REGISTRY.get_sample_value(
            "taskgate_worker_events_consumed_total", {"queue": queue, "outcome": "ok"}
        )
        or 0.0
        for queue in ORDER_QUEUES
    }


def copies(consumer: str, action: str) -> float:
    value = REGISTRY.get_sample_value(
        "taskgate_worker_message_copies_total", {"consumer": consumer, "action": action}
    )
    return value or 0.0


async def handled(before: dict[str, float], copies: int) -> None:
    async def done() -> bool:
        now = consumed()
        return all(now[queue] - before[queue] >= copies for queue in ORDER_QUEUES)

    await eventually(done, timeout_s=TIMEOUT_S, interval_s=0.02)


async def announce(pika_connection, order: OrderCreated, copies: int) -> None:
    """``copies`` copies of the order's event, as an outbox relay that crashed would send."""
    channel = await pika_connection.channel(publisher_confirms=True)
    exchange = await channel.get_exchange(ORDERS_EXCHANGE)
    for _ in range(copies):
        await exchange.publish(
            aio_pika.Message(
                msgspec.json.encode(order),
                message_id=order.order_id,
                delivery_mode=2,
                user_id=pika_connection.url.user,  # the consumers trust the test's own user
            ),
            routing_key=ORDER_CREATED,
        )
    await channel.close()


async def sales(shop: ShopDb, order_id: str) -> int:
    async def count(tx: Transaction) -> int:
        return int(await tx.fetchval("SELECT count(*) FROM sales WHERE order_id = $1", order_id))

    return await shop.db.read(count)


@pytest.fixture
async def other_host(amqp_url: str, settings: WorkerSettings) -> AsyncIterator[None]:
    """The three consumers again, on their own connection and store handle: another host."""
    connection = await rpc.connect_wire(amqp_url, name="other-host", reconnect_interval_s=0.2)
    database = await open_database(settings.database)
    mailer = Mailer(base_url=PROVIDER, api_key="test-key", attempts=3, backoff_s=0.01)
    consumers = EventConsumers(OrderFulfilment(await ShopDb.open(database), mailer).subscribers())
    await consumers.start(connection)
    yield
    await consumers.stop(grace_s=5)
    await mailer.close()
    await database.close()
    await connection.close()


async def test_a_second_copy_of_a_fulfilled_order_changes_nothing_and_publishes_nothing(
    pika_connection, shop, fulfilment, submitter, status_tap
):
    order = await make_order(shop, "TEE-01", 3)
    before = consumed()
    submitter.track(order.order_id)
    await status_tap.watch(order.order_id)
    with respx.mock(base_url=PROVIDER) as provider:
        route = provider.post("/v1/messages").mock(return_value=httpx.Response(200, json={}))
        await announce(pika_connection, order, 1)
        outcome = await submitter.wait(order.order_id, TIMEOUT_S)
        await handled(before, 1)
        first = await status_tap.events(order.order_id)
        await announce(pika_connection, order, 1)
        await handled(before, 2)

    assert outcome.state == "succeeded"
    assert outcome in first
    assert await status_tap.events(order.order_id) == first  # the copy published nothing
    assert len(emails_for(route, order)) == 1
    assert (await shop.available(["TEE-01"]))["TEE-01"] == SEED_STOCK["TEE-01"] - 3
    assert await sales(shop, order.order_id) == 1


async def test_two_copies_at_once_on_two_hosts_fulfil_the_order_once(
    pika_connection, shop, fulfilment, other_host, submitter, status_tap
):
    order = await make_order(shop, "MUG-01", 2)
    before = consumed()
    submitter.track(order.order_id)
    await status_tap.watch(order.order_id)
    gate = asyncio.Event()
    waited = copies("orders.email", "waited")

    async def email_copy_waits() -> bool:
        return copies("orders.email", "waited") > waited

    calling = asyncio.Event()

    async def slow_provider(request: httpx.Request) -> httpx.Response:
        calling.set()
        await gate.wait()
        return httpx.Response(200, json={"id": "msg-1"})

    with respx.mock(base_url=PROVIDER) as provider:
        route = provider.post("/v1/messages").mock(side_effect=slow_provider)
        await announce(pika_connection, order, 2)
        await asyncio.wait_for(calling.wait(), TIMEOUT_S)
        # One host is sending the email; the other has the copy and must wait for it.
        await eventually(email_copy_waits, timeout_s=TIMEOUT_S, interval_s=0.02)
        gate.set()
        outcome = await submitter.wait(order.order_id, TIMEOUT_S)
        await handled(before, 2)

    events = await status_tap.events(order.order_id)
    assert outcome.state == "succeeded"
    assert [e for e in events if e.state in ("succeeded", "failed")] == [outcome]
    assert len(emails_for(route, order)) == 1
    assert (await shop.available(["MUG-01"]))["MUG-01"] == SEED_STOCK["MUG-01"] - 2
    assert await sales(shop, order.order_id) == 1
    assert await shop.email_sent(order.order_id) == "msg-1"


# The shop's tables as the workers created them in DATABASE_PATH before issue 15.
SCHEMA_BEFORE = """
CREATE TABLE IF NOT EXISTS products (
    sku TEXT PRIMARY KEY, name TEXT NOT NULL,
    unit_price_cents INTEGER NOT NULL, tax_rate_bp INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS stock (
    sku TEXT PRIMARY KEY, available INTEGER NOT NULL CHECK (available >= 0)
);
CREATE TABLE IF NOT EXISTS reservations (
    order_id TEXT PRIMARY KEY, reserved INTEGER NOT NULL, detail TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sales (
    order_id TEXT PRIMARY KEY, total_cents INTEGER NOT NULL, units INTEGER NOT NULL,
    recorded_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS emails (
    order_id TEXT PRIMARY KEY, provider_id TEXT, sent_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS fulfilment (
    order_id TEXT NOT NULL, service TEXT NOT NULL, ok INTEGER NOT NULL, detail TEXT NOT NULL,
    PRIMARY KEY (order_id, service)
);
"""


async def test_a_shop_file_of_before_the_store_is_adopted_with_its_rows(tmp_path):
    path = tmp_path / "taskgate.db"
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA_BEFORE)
    conn.execute("INSERT INTO products VALUES ('MUG-01', 'Old mug', 999, 2000)")
    conn.execute("INSERT INTO stock VALUES ('MUG-01', 7)")
    conn.execute("INSERT INTO reservations VALUES ('o1', 1, 'reserved 1 units')")
    conn.execute("INSERT INTO sales VALUES ('o1', 1199, 1, 1.5)")
    conn.execute("INSERT INTO emails VALUES ('o1', 'msg-9', 1.5)")
    conn.executemany(
        "INSERT INTO fulfilment VALUES ('o1', ?, 1, 'done')", [("email",), ("inventory",)]
    )
    conn.commit()
    conn.close()

    database = await open_database(path)
    try:
        shop = await ShopDb.open(database)
        assert (await shop.catalogue(["MUG-01"]))["MUG-01"].name == "Old mug"
        assert await shop.available(["MUG-01", "TEE-01"]) == {
            "MUG-01": 7,  # kept, not re-seeded
            "TEE-01": SEED_STOCK["TEE-01"],  # missing rows seeded
        }
        assert await shop.email_sent("o1") == "msg-9"
        assert await sales(shop, "o1") == 1
        # The order's last part finishes it: the parts counted before the upgrade count.
        progress = await shop.complete("o1", Completion("analytics", True, "recorded"))
        assert progress.finishes_order
        assert [p.service for p in progress.parts] == ["analytics", "email", "inventory"]
    finally:
        await database.close()
