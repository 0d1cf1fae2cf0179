"""Flow control against the real broker: while it blocks publishers, they wait.

A memory alarm (``set_vm_memory_high_watermark 0``) puts the broker's
connections in "blocking": at its next publish a connection gets
connection.blocked and the broker stops reading it until the alarm clears.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from infra.node import BrokerNode
from rpc.wire import Channel, PublishBlocked, WireConnection
from rpc.wire.protocol import blocked_seconds_total

from ..helpers import eventually


async def block(node: BrokerNode, connection: WireConnection, channel: Channel) -> None:
    """Turn the node's memory alarm on, and publish until ``connection`` is told it is blocked."""
    await asyncio.to_thread(node.rabbitmqctl, "set_vm_memory_high_watermark", "0")

    async def blocked() -> bool:
        if not connection.is_blocked:
            channel.publish(b"", routing_key="test.flow.nowhere")  # dropped: no such queue
        return connection.is_blocked

    await eventually(blocked, timeout_s=30)


async def unblock(node: BrokerNode) -> None:
    await asyncio.to_thread(node.rabbitmqctl, "set_vm_memory_high_watermark", "0.4")


@pytest.fixture
async def flow_connection(own_broker: BrokerNode) -> AsyncIterator[WireConnection]:
    connection = await WireConnection.connect(own_broker.amqp_url, name="test-flow")
    try:
        yield connection
    finally:
        await unblock(own_broker)
        await connection.close()


async def test_a_publish_waits_while_the_broker_blocks_publishers_and_completes_after(
    own_broker: BrokerNode, flow_connection: WireConnection, unique_name
):
    queue = unique_name("blocked")
    channel = await flow_connection.raw_channel(publisher_confirms=True)
    await channel.queue_declare(queue, exclusive=True)
    blocked_before_s = blocked_seconds_total()
    await block(own_broker, flow_connection, channel)
    try:
        waiting = asyncio.ensure_future(channel.basic_publish(b"waited", routing_key=queue))
        await asyncio.sleep(0)  # one turn: the publish reaches its wait for unblocked

        assert not waiting.done()
        assert flow_connection.blocked_reason == channel.blocked_reason == "low on memory"
    finally:
        await unblock(own_broker)

    # Before, it was written at once and waited, unread, behind the blocked socket.
    assert await asyncio.wait_for(waiting, 30) is True
    assert not flow_connection.is_blocked
    got = await channel.basic_get(queue, no_ack=True)
    assert got is not None and got.body == b"waited"
    assert blocked_seconds_total() > blocked_before_s


async def test_a_publish_blocked_past_its_bound_raises_publish_blocked(
    own_broker: BrokerNode, flow_connection: WireConnection, unique_name
):
    channel = await flow_connection.raw_channel(publisher_confirms=True)
    await block(own_broker, flow_connection, channel)

    with pytest.raises(PublishBlocked, match="low on memory"):
        await channel.basic_publish(b"x", routing_key=unique_name("q"), blocked_timeout_s=0.05)

    await unblock(own_broker)
    assert await asyncio.wait_for(channel.basic_publish(b"x", routing_key="nowhere"), 30) is True


async def test_a_publish_given_up_while_blocked_is_never_sent(
    own_broker: BrokerNode, flow_connection: WireConnection, unique_name
):
    # A gateway that times out answers 503, which promises nothing was stored: the
    # message must not reach the queue once the alarm clears.
    queue = unique_name("given-up")
    channel = await flow_connection.raw_channel(publisher_confirms=True)
    await channel.queue_declare(queue, exclusive=True)
    await block(own_broker, flow_connection, channel)
    try:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await channel.basic_publish(b"given up", routing_key=queue)
    finally:
        await unblock(own_broker)

    assert await asyncio.wait_for(channel.basic_publish(b"after", routing_key=queue), 30) is True
    bodies = []
    while (got := await channel.basic_get(queue, no_ack=True)) is not None:
        bodies.append(got.body)
    # Before, the given-up publish was already written and arrived first.
    assert bodies == [b"after"]
