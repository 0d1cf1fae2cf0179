"""Accepting work while the broker is paused or stopped: 202 up to the bound, published once after.

A broker node of this module's own, to freeze (SIGSTOP) and stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import time
from collections import Counter
from dataclasses import replace

import aio_pika

from gateway.settings import GatewaySettings
from infra.node import BrokerNode
from workers.topology import task_queue

from ..helpers import eventually, take_tasks
from .conftest import jpeg_bytes, upload, wait_ready


def outbox_ids(settings: GatewaySettings) -> list[str]:
    with contextlib.closing(sqlite3.connect(settings.database_path)) as db:
        return sorted(row[0] for row in db.execute("SELECT message_id FROM outbox"))


async def outbox_empty(settings: GatewaySettings) -> bool:
    return not outbox_ids(settings)


def stored_task_ids(settings: GatewaySettings) -> list[str]:
    with contextlib.closing(sqlite3.connect(settings.database_path)) as db:
        return sorted(row[0] for row in db.execute("SELECT task_id FROM tasks"))


async def published_once(settings: GatewaySettings, amqp_url: str, accepted: list[str]) -> None:
    """Until the outbox is empty; then every accepted task is in its queue exactly once."""

    await eventually(lambda: outbox_empty(settings))
    assert Counter(await take_tasks(amqp_url, settings.upload_kind)) == dict.fromkeys(accepted, 1)


async def test_a_paused_broker_delays_uploads_and_refuses_none(
    gateway_app, gateway_settings, own_broker: BrokerNode, kind_prefix
):
    settings = replace(
        gateway_settings, amqp_url=own_broker.amqp_url, upload_kind=f"{kind_prefix}.paused"
    )
    pid = own_broker.pid
    assert pid is not None
    async with gateway_app(settings) as client:
        await wait_ready(client)
        first = await upload(client, jpeg_bytes())
        await eventually(lambda: outbox_empty(settings))
        os.kill(pid, signal.SIGSTOP)
        try:
            during = [await upload(client, jpeg_bytes()) for _ in range(5)]
            # The relay waits for confirms the paused broker cannot send: nothing is marked sent.
            waiting = outbox_ids(settings)
        finally:
            os.kill(pid, signal.SIGCONT)
        accepted = [response.json()["task_id"] for response in (first, *during)]
        await published_once(settings, own_broker.amqp_url, accepted)

    assert [response.status_code for response in (first, *during)] == [202] * 6
    assert waiting == sorted(response.json()["task_id"] for response in during)
    assert stored_task_ids(settings) == sorted(accepted)


async def test_a_stopped_broker_fills_the_outbox_to_its_bound_and_it_drains_when_back(
    gateway_app, gateway_settings, own_broker: BrokerNode, kind_prefix
):
    settings = replace(
        gateway_settings,
        amqp_url=own_broker.amqp_url,
        upload_kind=f"{kind_prefix}.stopped",
        outbox_max_pending=3,
        reconnect_max_s=0.5,
    )
    await asyncio.to_thread(own_broker.stop)
    try:
        async with gateway_app(settings) as client:
            responses = [await upload(client, jpeg_bytes()) for _ in range(4)]
            await asyncio.to_thread(own_broker.start)
            accepted = [response.json()["task_id"] for response in responses[:3]]
            await published_once(settings, own_broker.amqp_url, accepted)
    finally:
        if not own_broker.is_running():
            await asyncio.to_thread(own_broker.start)

    assert [response.status_code for response in responses] == [202, 202, 202, 503]
    assert responses[3].headers["retry-after"] == "5"
    assert stored_task_ids(settings) == sorted(accepted)
    assert sorted(p.name for p in settings.storage_dir.iterdir()) == sorted(accepted)


async def test_the_accept_wakes_the_relay_so_a_task_leaves_at_once(
    gateway_app, gateway_settings, kind_prefix, amqp_url
):
    """With polling off (once an hour), only the accept's wake-up publishes; -s shows latency."""
    settings = replace(
        gateway_settings,
        upload_kind=f"{kind_prefix}.woken",
        outbox_poll_s=3600,
        tasks_in_flight_per_user=1000,  # one user's 100 tasks, none of them run
    )
    image = jpeg_bytes(320, 240)
    arrived: dict[str, float] = {}
    answered: dict[str, float] = {}
    every = asyncio.Event()
    connection = await aio_pika.connect(amqp_url)
    async with connection, gateway_app(settings) as client:
        await wait_ready(client)
        answered[(await upload(client, image)).json()["task_id"]] = time.monotonic()
        channel = await connection.channel()
        queue = await channel.declare_queue(task_queue(settings.upload_kind), passive=True)

        async def on_task(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            arrived[str(message.message_id)] = time.monotonic()
            await message.ack()
            if len(arrived) == 100:
                every.set()

        await queue.consume(on_task)
        for _ in range(99):
            response = await upload(client, image)
            answered[response.json()["task_id"]] = time.monotonic()
        async with asyncio.timeout(60):
            await every.wait()

    assert set(arrived) == set(answered)
    after_ms = sorted((arrived[i] - answered[i]) * 1000 for i in list(answered)[1:])
    print(
        f"\n202 answered -> task in its queue: p50 {after_ms[len(after_ms) // 2]:.1f} ms,"
        f" max {after_ms[-1]:.1f} ms"
    )
