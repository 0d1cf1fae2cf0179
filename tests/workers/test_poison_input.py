"""Poison input over AMQP: JSON nested too deep to decode is dead-lettered at once, with why."""

from __future__ import annotations

import logging

import aio_pika
import aiormq
import msgspec
import pytest

from workers import TaskContext, TaskRegistry
from workers.shop.contracts import ORDER_CREATED, ORDERS_EXCHANGE
from workers.topology import REASON_HEADER, TASKS_EXCHANGE

from .conftest import eventually, get_dead_letters

TIMEOUT_S = 30
# Deeper than any interpreter lets msgspec recurse (Python 3.13 decodes 5,000 deep, the
# issue's case, without trouble, and only the validation then fails).
DEEP = b"[" * 100_000 + b"]" * 100_000


class Steps(msgspec.Struct):
    steps: int


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@pytest.mark.parametrize("where", ["payload", "body"])
async def test_a_task_nested_too_deep_is_dead_lettered_at_once_with_a_reason(
    where, kinds, start_worker, submitter, connection, pika_connection, caplog
):
    kind = kinds()
    registry = TaskRegistry()

    @registry.task(kind)
    async def count(ctx: TaskContext, payload: Steps) -> int:
        return payload.steps

    await start_worker(registry)
    if where == "payload":
        body = b'{"task_id":"deep1","kind":"%s","payload":%s}' % (kind.encode(), DEEP)
    else:
        body = b'{"task_id":"deep1","kind":"%s","payload":null,"x":%s}' % (kind.encode(), DEEP)
    channel = await pika_connection.channel(publisher_confirms=True)
    raw = await channel.get_underlay_channel()
    await raw.basic_publish(
        body,
        exchange=TASKS_EXCHANGE,
        routing_key=kind,
        properties=aiormq.spec.Basic.Properties(
            message_id="deep1",
            user_id=pika_connection.url.user,  # a sender the worker trusts
        ),
    )
    await channel.close()

    outcome = await submitter.submit_and_wait(kind, {"steps": 2}, timeout_s=TIMEOUT_S)

    assert (outcome.state, outcome.result) == ("succeeded", 2)  # the worker keeps serving
    letters: list = []

    async def buried() -> bool:
        # The first look: peeking returns the letter to its queue, which counts a delivery.
        letters.extend(await get_dead_letters(connection, kind))
        return bool(letters)

    await eventually(buried, timeout_s=TIMEOUT_S)
    assert len(letters) == 1
    headers = letters[0].properties.headers or {}
    assert _text(headers[REASON_HEADER]) == (
        "undecodable task message: nested deeper than JSON decoding allows"
    )
    assert not headers.get("x-delivery-count")  # buried on its first delivery
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


async def test_an_order_event_nested_too_deep_is_dead_lettered_at_once_with_a_reason(
    pika_connection, fulfilment
):
    channel = await pika_connection.channel(publisher_confirms=True)
    exchange = await channel.get_exchange(ORDERS_EXCHANGE)
    body = b'{"order_id":"deep2","x":%s}' % DEEP
    await exchange.publish(
        aio_pika.Message(body, message_id="deep2", user_id=pika_connection.url.user),
        routing_key=ORDER_CREATED,
    )
    dead = await channel.declare_queue("orders.inventory.dead", passive=True)
    poison: list[aio_pika.abc.AbstractIncomingMessage] = []

    async def buried() -> bool:
        message = await dead.get(fail=False, no_ack=True)
        if message is not None and message.message_id == "deep2":
            poison.append(message)
        return bool(poison)

    await eventually(buried, timeout_s=TIMEOUT_S, interval_s=0.02)
    await channel.close()

    headers = poison[0].headers
    assert _text(headers[REASON_HEADER]).startswith(
        "InvalidInput: not an order.created event: nested deeper than JSON decoding allows"
    )
    assert not headers.get("x-delivery-count")  # buried on its first delivery
