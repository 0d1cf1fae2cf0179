"""rpc.wire's synchronous calls against the real broker: a reply answers only its own call.

Replies on a channel come in the order of its calls, so a call that goes without
its reply, or a reply nobody asked for, would shift every later answer by one.
"""

from __future__ import annotations

import asyncio

import pytest
from pamqp import commands, frame, header

from rpc.wire import Channel, ChannelOutOfStep, WireConnection


async def start_call(channel: Channel, call: asyncio.Future[object]) -> None:
    """Let ``call`` run until its frame is sent and it waits for the reply."""
    await asyncio.sleep(0)  # one loop turn: the task sends its frame, then awaits
    assert channel._waiter is not None, "the call has not sent its frame yet"


def inject(channel: Channel, method: commands.Frame) -> None:
    """Hand ``channel`` a method frame as if the broker had sent it."""
    raw = frame.marshal(method, channel.number)
    class_id, method_id = method.index >> 16, method.index & 0xFFFF
    channel.on_method(class_id, method_id, memoryview(raw)[7:-1])


async def test_a_declare_cancelled_after_its_frame_left_does_not_answer_the_next_call(
    connection: WireConnection, unique_name
):
    channel = await connection.raw_channel()
    first = unique_name("first-queue")
    call = asyncio.ensure_future(channel.queue_declare(first, auto_delete=True))
    await start_call(channel, call)

    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call

    # Before the fix this returned DeclareOk("...first-queue"): the cancelled call's reply.
    with pytest.raises(ChannelOutOfStep):
        await channel.queue_declare("", exclusive=True)
    assert channel.is_closed
    fresh = await connection.raw_channel()
    assert (await fresh.queue_declare("", exclusive=True)).queue.startswith("amq.gen-")
    await fresh.close()


async def test_a_robust_channel_out_of_step_is_reopened_with_its_set_up(
    connection: WireConnection, unique_name
):
    set_up: asyncio.Queue[Channel] = asyncio.Queue()

    async def setup(raw: Channel) -> None:
        await raw.queue_declare(unique_name("set-up"), auto_delete=True)
        set_up.put_nowait(raw)

    robust = await connection.open_channel(setup)
    first_raw = set_up.get_nowait()
    call = asyncio.ensure_future(first_raw.queue_declare(unique_name("given-up")))
    await start_call(first_raw, call)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call

    second_raw = await asyncio.wait_for(set_up.get(), 10)

    assert second_raw is not first_raw and first_raw.is_closed
    assert await robust.get_underlay_channel() is second_raw
    assert (await second_raw.queue_declare("", exclusive=True)).queue.startswith("amq.gen-")
    await robust.close()


async def test_a_reply_of_another_method_fails_its_call_and_closes_only_its_channel(
    connection: WireConnection, unique_name
):
    channel = await connection.raw_channel()
    other = await connection.raw_channel()
    call = asyncio.ensure_future(channel.queue_declare(unique_name("asked"), auto_delete=True))
    await start_call(channel, call)

    inject(channel, commands.Queue.BindOk())

    with pytest.raises(ChannelOutOfStep, match=r"Queue\.BindOk"):
        await call
    assert channel.is_closed and not other.is_closed
    # The real DeclareOk and the broker's CloseOk arrive after this and are dropped;
    # the connection, and its other channels, carry on.
    assert (await other.queue_declare("", exclusive=True)).queue.startswith("amq.gen-")
    await other.close()


async def test_a_reply_with_no_call_waiting_closes_the_channel(connection: WireConnection):
    channel = await connection.raw_channel()

    inject(
        channel, commands.Queue.DeclareOk(queue="nobody-asked", message_count=0, consumer_count=0)
    )

    assert channel.is_closed
    with pytest.raises(ChannelOutOfStep, match="no call waiting"):
        await channel.queue_declare("", exclusive=True)


async def test_a_frame_its_channel_cannot_take_closes_it_and_the_robust_channel_reopens(
    connection: WireConnection, unique_name
):
    set_up: asyncio.Queue[Channel] = asyncio.Queue()
    queue = unique_name("mid-message")

    async def setup(raw: Channel) -> None:
        await raw.queue_declare(queue, auto_delete=True)
        set_up.put_nowait(raw)

    robust = await connection.open_channel(setup, publisher_confirms=True)
    first_raw = set_up.get_nowait()
    # A content header with no Deliver before it: the channel cannot place it.
    stray = frame.marshal(header.ContentHeader(0, 5, commands.Basic.Properties()), first_raw.number)
    connection._protocol.data_received(stray)  # as if the broker had sent it

    assert first_raw.is_closed  # before the fix: logged, and the channel went on mid-message
    second_raw = await asyncio.wait_for(set_up.get(), 10)
    assert await second_raw.basic_publish(b"after", routing_key=queue) is True
    got = await second_raw.basic_get(queue, no_ack=True)
    assert got is not None and got.body == b"after"
    await robust.close()


async def test_a_consumer_that_raises_leaves_its_channel_in_step(
    connection: WireConnection, unique_name
):
    queue = unique_name("raising-consumer")
    channel = await connection.raw_channel()
    await channel.queue_declare(queue, auto_delete=True)
    seen: asyncio.Queue[bytes] = asyncio.Queue()

    def consume(delivery) -> None:
        seen.put_nowait(delivery.body)
        delivery.ack()
        if delivery.body == b"bad":
            raise ValueError("the consumer's own bug")

    await channel.basic_consume(queue, consume)
    channel.publish(b"bad", routing_key=queue)
    channel.publish(b"good", routing_key=queue)

    assert [await asyncio.wait_for(seen.get(), 10) for _ in range(2)] == [b"bad", b"good"]
    assert not channel.is_closed
    await channel.close()
