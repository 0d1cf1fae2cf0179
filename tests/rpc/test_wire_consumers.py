"""Consumers the broker cancels (their queue was deleted), against the real broker.

The broker sends Basic.Cancel (we announce consumer_cancel_notify): the channel
is no longer what its owner set up, so it is closed with ConsumerCancelled; a
robust channel reopens and its set-up declares the queue and consumes again.
"""

from __future__ import annotations

import asyncio

from rpc.wire import Channel, ConsumerCancelled, Delivery, WireConnection


async def test_a_robust_channels_consumer_is_restored_after_its_queue_is_deleted(
    connection: WireConnection, unique_name
):
    queue = unique_name("deleted-under-consumer")
    set_up: asyncio.Queue[Channel] = asyncio.Queue()
    received: asyncio.Queue[bytes] = asyncio.Queue()
    lost: list[BaseException | None] = []

    def consume(delivery: Delivery) -> None:
        received.put_nowait(delivery.body)
        delivery.ack()

    async def setup(raw: Channel) -> None:
        await raw.queue_declare(queue, durable=True, auto_delete=True)
        await raw.basic_consume(queue, consume)
        set_up.put_nowait(raw)

    robust = await connection.open_channel(setup, on_lost=lost.append)
    first_raw = set_up.get_nowait()
    other = await connection.raw_channel(publisher_confirms=True)

    await other.queue_delete(queue)
    second_raw = await asyncio.wait_for(set_up.get(), 10)

    assert first_raw.is_closed and second_raw is not first_raw
    assert len(lost) == 1 and isinstance(lost[0], ConsumerCancelled)
    assert await other.basic_publish(b"to the new queue", routing_key=queue) is True
    assert await asyncio.wait_for(received.get(), 10) == b"to the new queue"
    await other.close()
    await robust.close()


async def test_a_raw_channels_owner_is_told_which_consumer_the_broker_cancelled(
    connection: WireConnection, unique_name
):
    queue = unique_name("deleted-under-raw-consumer")
    channel = await connection.raw_channel()
    await channel.queue_declare(queue, durable=True, auto_delete=True)
    tag = await channel.basic_consume(queue, lambda delivery: None)
    told: asyncio.Future[Exception] = asyncio.get_running_loop().create_future()
    channel.close_callbacks.append(told.set_result)
    other = await connection.raw_channel()

    await other.queue_delete(queue)
    error = await asyncio.wait_for(told, 10)

    # Before, the owner heard only "channel closed by the broker: 200 closed by the client".
    assert isinstance(error, ConsumerCancelled) and error.consumer_tag == tag
    assert tag in str(error)
    assert channel.is_closed
    # The channel's number is freed once the broker confirms the close; others carry on.
    assert (await other.queue_declare("", exclusive=True)).queue.startswith("amq.gen-")
    await other.close()
