"""The recorder: a status event it cannot decode is dead-lettered with a reason, and it goes on."""

from __future__ import annotations

import contextlib
import sqlite3
import uuid

import aio_pika

from workers.messages import encoder, new_event
from workers.topology import REASON_HEADER, STATUS_DEAD_QUEUE, STATUS_EXCHANGE, declare_status

from ..helpers import eventually
from .conftest import wait_ready


async def test_an_undecodable_status_event_is_dead_lettered_and_recording_goes_on(
    gateway_app, gateway_settings, amqp_url, role_urls
):
    poison_id = uuid.uuid4().hex
    good = new_event("images.thumbnail", uuid.uuid4().hex, "queued", 1)
    connection = await aio_pika.connect(amqp_url)
    worker = await aio_pika.connect(role_urls["worker"])  # whom the recorder takes events from
    async with connection, worker, gateway_app(gateway_settings) as client:
        await wait_ready(client)
        channel = await connection.channel()
        status = await (await worker.channel()).get_exchange(STATUS_EXCHANGE)
        await status.publish(
            aio_pika.Message(
                b'{"not": "an event"', message_id=poison_id, delivery_mode=2, user_id="worker"
            ),
            routing_key="images.thumbnail.x.progress",
        )
        await status.publish(
            aio_pika.Message(encoder.encode(good), delivery_mode=2, user_id="worker"),
            routing_key=f"images.thumbnail.{good.task_id}.queued",
        )

        async def recorded() -> bool:
            with contextlib.closing(sqlite3.connect(gateway_settings.database_path)) as db:
                rows = db.execute("SELECT 1 FROM tasks WHERE task_id = ?", (good.task_id,))
                return rows.fetchone() is not None

        await eventually(recorded, timeout_s=30)
        dead = await channel.declare_queue(STATUS_DEAD_QUEUE, passive=True)
        buried: list[aio_pika.abc.AbstractIncomingMessage] = []

        async def found() -> bool:
            message = await dead.get(fail=False, no_ack=True)
            if message is not None and message.message_id == poison_id:
                buried.append(message)
            return bool(buried)

        await eventually(found, timeout_s=30, interval_s=0.02)

    assert buried[0].body == b'{"not": "an event"'
    assert "undecodable status event" in buried[0].headers[REASON_HEADER]


async def test_poison_waiting_in_the_journal_at_start_is_dead_lettered_with_its_reason(
    gateway_app, gateway_settings, amqp_url, role_urls
):
    # The feed consumes the journal before the gateway's publisher, which buries, is up.
    poison_id = uuid.uuid4().hex
    connection = await aio_pika.connect(amqp_url)
    worker = await aio_pika.connect(role_urls["worker"])  # whom the recorder takes events from
    async with connection, worker:
        channel = await connection.channel()
        await declare_status(await channel.get_underlay_channel())
        status = await (await worker.channel()).get_exchange(STATUS_EXCHANGE)
        await status.publish(
            aio_pika.Message(
                b"\xff poison", message_id=poison_id, delivery_mode=2, user_id="worker"
            ),
            routing_key="images.thumbnail.y.progress",
        )
        async with gateway_app(gateway_settings) as client:
            await wait_ready(client)
            dead = await channel.declare_queue(STATUS_DEAD_QUEUE, passive=True)
            buried: list[aio_pika.abc.AbstractIncomingMessage] = []

            async def found() -> bool:
                message = await dead.get(fail=False, no_ack=True)
                if message is not None and message.message_id == poison_id:
                    buried.append(message)
                return bool(buried)

            await eventually(found, timeout_s=30, interval_s=0.02)

    assert "undecodable status event" in buried[0].headers[REASON_HEADER]
