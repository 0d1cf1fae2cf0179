"""The order.created consumers with the real broker and database; respx stands in for the
email provider (a third party reached over HTTP)."""

from __future__ import annotations

import time
import uuid

import aio_pika
import httpx
import msgspec
import respx

from rpc.connection import connect_wire
from rpc.wire import Properties
from workers.messages import StatusEvent
from workers.shop.contracts import (
    ORDER_CREATED,
    ORDERS_EXCHANGE,
    Cart,
    CartLine,
    OrderCreated,
)
from workers.shop.db import ShopDb
from workers.shop.pricing import quote_cart
from workers.topology import REASON_HEADER

from ..helpers import eventually
from .conftest import PROVIDER

TIMEOUT_S = 30


async def make_order(shop: ShopDb, sku: str = "MUG-01", quantity: int = 1) -> OrderCreated:
    cart = Cart(lines=[CartLine(sku, quantity)])
    quote = quote_cart(cart, await shop.catalogue([sku]))
    return OrderCreated(
        order_id=uuid.uuid4().hex, email="ada@example.com", quote=quote, created_at=time.time()
    )


async def announce(pika_connection, order: OrderCreated) -> None:
    channel = await pika_connection.channel(publisher_confirms=True)
    exchange = await channel.get_exchange(ORDERS_EXCHANGE)
    await exchange.publish(
        # As the test's user, whom its consumers trust (workers/senders.py).
        aio_pika.Message(
            msgspec.json.encode(order), delivery_mode=2, user_id=pika_connection.url.user
        ),
        routing_key=ORDER_CREATED,
    )
    await channel.close()


def emails_for(route: respx.Route, order: OrderCreated) -> list[httpx.Request]:
    return [
        call.request
        for call in route.calls
        if call.request.headers.get("idempotency-key") == order.order_id
    ]


async def test_a_busy_provider_is_retried_and_the_order_completes(
    connection, pika_connection, shop, fulfilment, submitter
):
    order = await make_order(shop)
    submitter.track(order.order_id)
    with respx.mock(base_url=PROVIDER, assert_all_called=False) as provider:
        answers = iter([httpx.Response(503), httpx.Response(200, json={"id": "msg-1"})])
        route = provider.post("/v1/messages").mock(side_effect=lambda request: next(answers))
        await announce(pika_connection, order)
        outcome = await submitter.wait(order.order_id, TIMEOUT_S)

    sent = emails_for(route, order)
    assert outcome.state == "succeeded"
    assert outcome.result["services"]["email"]["ok"] is True
    assert len(sent) == 2
    assert sent[0].headers["authorization"] == "Bearer test-key"
    assert msgspec.json.decode(sent[0].content)["to"] == "ada@example.com"
    assert await shop.email_sent(order.order_id) == "msg-1"


async def test_an_order_the_stock_cannot_cover_fails_with_the_reason(
    connection, pika_connection, shop, fulfilment, submitter
):
    # PRINT-01 starts with 3 units: the first order takes 2, the second cannot.
    orders = [await make_order(shop, "PRINT-01", 2) for _ in range(2)]
    outcomes: list[StatusEvent] = []
    with respx.mock(base_url=PROVIDER) as provider:
        provider.post("/v1/messages").mock(return_value=httpx.Response(200, json={}))
        for order in orders:
            submitter.track(order.order_id)
            await announce(pika_connection, order)
            outcomes.append(await submitter.wait(order.order_id, TIMEOUT_S))

    assert [outcome.state for outcome in outcomes] == ["succeeded", "failed"]
    assert "inventory: out of stock: PRINT-01 (1 left, 2 wanted)" in outcomes[1].error
    assert outcomes[1].result["services"]["email"]["ok"] is True
    assert (await shop.available(["PRINT-01"]))["PRINT-01"] == 1


async def test_a_refused_email_is_dead_lettered_with_the_providers_reason(
    connection, pika_connection, shop, fulfilment
):
    order = await make_order(shop)
    with respx.mock(base_url=PROVIDER) as provider:
        provider.post("/v1/messages").mock(
            return_value=httpx.Response(422, json={"error": "invalid recipient"})
        )
        await announce(pika_connection, order)
        channel = await pika_connection.channel()
        dead = await channel.declare_queue("orders.email.dead", passive=True)
        buried: list[aio_pika.abc.AbstractIncomingMessage] = []

        async def found() -> bool:
            message = await dead.get(fail=False, no_ack=True)
            if message is not None and order.order_id.encode() in message.body:
                buried.append(message)
            return bool(buried)

        await eventually(found, timeout_s=TIMEOUT_S, interval_s=0.02)
        await channel.close()

    assert "email provider refused the message: 422" in buried[0].headers[REASON_HEADER]
    assert await shop.email_sent(order.order_id) is None


async def test_an_undecodable_order_event_is_dead_lettered_and_consuming_goes_on(
    connection, pika_connection, shop, fulfilment, submitter
):
    channel = await pika_connection.channel(publisher_confirms=True)
    exchange = await channel.get_exchange(ORDERS_EXCHANGE)
    await exchange.publish(
        aio_pika.Message(b'{"order_id": 1}', message_id="poison", user_id=pika_connection.url.user),
        routing_key=ORDER_CREATED,
    )
    order = await make_order(shop)
    submitter.track(order.order_id)
    with respx.mock(base_url=PROVIDER) as provider:
        provider.post("/v1/messages").mock(return_value=httpx.Response(200, json={}))
        await announce(pika_connection, order)
        outcome = await submitter.wait(order.order_id, TIMEOUT_S)
    dead = await channel.declare_queue("orders.inventory.dead", passive=True)
    poison: list[aio_pika.abc.AbstractIncomingMessage] = []

    async def buried() -> bool:
        message = await dead.get(fail=False, no_ack=True)
        if message is not None and message.message_id == "poison":
            poison.append(message)
        return bool(poison)

    await eventually(buried, timeout_s=TIMEOUT_S, interval_s=0.02)
    await channel.close()

    assert outcome.state == "succeeded"
    assert "not an order.created event" in poison[0].headers[REASON_HEADER]


async def test_an_order_event_another_role_puts_in_the_queue_is_dead_lettered_unread(
    role_urls, connection, shop, fulfilment
):
    """Issue 16: the worker user fed orders.email through the default exchange; the gateway
    alone publishes orders, and a consumer takes them from no one else."""
    order = await make_order(shop)
    forger = await connect_wire(role_urls["worker"], name="test-forger")
    raw = await forger.raw_channel(publisher_confirms=True)
    with respx.mock(base_url=PROVIDER, assert_all_called=False) as provider:
        route = provider.post("/v1/messages").mock(return_value=httpx.Response(200, json={}))
        await raw.basic_publish(
            msgspec.json.encode(order),
            routing_key="orders.email",  # through amq.default, which the worker writes to
            properties=Properties(message_id="forged", delivery_mode=2),
        )
        buried = await dead_letter(connection, "orders.email.dead", "forged")

    await forger.close()
    reason = (buried.properties.headers or {})[REASON_HEADER]
    reason = reason.decode() if isinstance(reason, bytes) else reason
    assert "untrusted sender: user_id 'worker'" in reason
    assert not emails_for(route, order)
    assert await shop.email_sent(order.order_id) is None


async def dead_letter(connection, queue: str, message_id: str):
    """The dead letter ``message_id`` from ``queue``, once it is there (taken)."""
    found = []

    async def there() -> bool:
        raw = await connection.raw_channel()
        while (message := await raw.basic_get(queue)) is not None:
            if message.properties.message_id == message_id:
                raw.basic_ack(message.delivery_tag)
                found.append(message)
        await raw.close()
        return bool(found)

    await eventually(there, timeout_s=TIMEOUT_S, interval_s=0.05)
    return found[0]
