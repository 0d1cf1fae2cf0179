"""rpc.wire against the real broker: what the RPC and task paths rely on beyond round trips."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from urllib.parse import urlsplit

import pytest

from rpc.wire import ChannelClosed, Delivery, Properties, WireConnection


async def consume_into(channel, queue: str) -> asyncio.Queue[Delivery]:
    received: asyncio.Queue[Delivery] = asyncio.Queue()
    await channel.basic_consume(queue, received.put_nowait)
    return received


async def test_a_body_larger_than_a_frame_and_every_property_arrive_intact(
    connection: WireConnection, unique_name
):
    queue = unique_name("wire")
    channel = await connection.raw_channel(publisher_confirms=True)
    await channel.queue_declare(queue, auto_delete=True)
    received = await consume_into(channel, queue)
    body = bytes(range(256)) * 2000  # 512,000 bytes: several frames at frame_max 131,072
    sent = Properties(
        content_type="application/octet-stream",
        headers={"x-attempt": 3, "x-reason": "because", "x-nested": {"ok": True}},
        delivery_mode=2,
        priority=5,
        correlation_id="corr-1",
        reply_to="somewhere",
        expiration="60000",
        message_id="msg-1",
        timestamp=datetime(2026, 11, 25, 12, 0, tzinfo=UTC),
        message_type="blob",
        app_id="taskgate-tests",
    )

    assert await channel.basic_publish(body, routing_key=queue, properties=sent) is True
    got = await asyncio.wait_for(received.get(), 10)

    assert got.body == body
    for name in Properties.__slots__:
        if name != "user_id":
            assert getattr(got.properties, name) == getattr(sent, name), name
    # Not given, so stamped with the connection's user (workers/senders.py relies on it).
    assert got.properties.user_id == connection.user_id == urlsplit(connection.url).username
    await channel.close()


async def test_batched_acks_never_ack_a_delivery_still_in_progress(
    connection: WireConnection, unique_name
):
    queue = unique_name("wire-acks")
    setup = await connection.raw_channel()
    await setup.queue_declare(queue)
    consumer = await connection.raw_channel()
    await consumer.basic_qos(10)
    received = await consume_into(consumer, queue)
    for n in (1, 2, 3):
        setup.publish(str(n).encode(), routing_key=queue)
    first, second, third = [await asyncio.wait_for(received.get(), 10) for _ in range(3)]

    # The 2nd and 3rd are done while the 1st is still being worked on: no "multiple"
    # ack may cover the 1st, so closing the channel must give it back.
    second.ack()
    third.ack()
    await consumer.close()
    again = await setup.basic_get(queue, no_ack=True)

    assert first.body == b"1"
    assert again is not None and again.body == b"1" and again.redelivered
    assert await setup.basic_get(queue, no_ack=True) is None
    await setup.close()


async def test_an_unroutable_mandatory_publish_is_confirmed_as_returned(
    connection: WireConnection, unique_name
):
    channel = await connection.raw_channel(publisher_confirms=True)

    routed = await channel.basic_publish(
        b"{}",
        routing_key=unique_name("nobody-home"),
        properties=Properties(message_id="lost-1"),
        mandatory=True,
    )
    without_id = await channel.basic_publish(
        b"{}", routing_key=unique_name("nobody-home"), mandatory=True
    )

    assert (routed, without_id) == (False, False)
    await channel.close()


async def test_a_refused_declaration_closes_only_its_channel(
    connection: WireConnection, unique_name
):
    queue = unique_name("wire-args")
    channel = await connection.raw_channel()
    await channel.queue_declare(queue, auto_delete=True)
    other = await connection.raw_channel()

    with pytest.raises(ChannelClosed) as refused:
        await other.queue_declare(queue, auto_delete=True, arguments={"x-max-length": 1})

    assert refused.value.code == 406  # PRECONDITION_FAILED: different arguments
    assert other.is_closed and not channel.is_closed
    await channel.queue_declare(queue, auto_delete=True)  # the connection is still fine
    await channel.close()
