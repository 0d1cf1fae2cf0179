"""Delayed and scheduled tasks: kept in the outbox until due, then published by a relay."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import AsyncIterator

import aio_pika
import pytest

import rpc
from gateway.outbox import (
    OUTBOX_MIGRATIONS,
    OutboxScheduler,
    add_to_outbox,
    pending_count,
    scheduled_count,
    task_entry,
)
from gateway.outbox_relay import OutboxRelay
from gateway.publisher import Publisher
from infra.database import Database, Transaction
from workers import TaskContext, TaskRegistry, TaskSubmitter, Worker, WorkerSettings
from workers.messages import TaskMessage
from workers.topology import DEFAULT_QUEUE_MAX_LENGTH, Priority, task_queue

from ..helpers import eventually
from .conftest import jpeg_bytes, read_stream, upload

TIMEOUT_S = 30
# Far longer than any test waits: a relay that publishes a delayed entry woke for it.
NEVER_POLL_S = 3600.0


@pytest.fixture
async def outbox(database: Database) -> Database:
    await database.migrate("outbox", OUTBOX_MIGRATIONS)
    return database


@pytest.fixture
async def publisher(connection: rpc.WireConnection) -> AsyncIterator[Publisher]:
    publisher = Publisher(queue_max_length=DEFAULT_QUEUE_MAX_LENGTH, timeout_s=5)
    await publisher.start(connection)
    yield publisher
    await publisher.close()


def relay(
    database: Database, publisher: Publisher, name: str, poll_s: float = NEVER_POLL_S
) -> OutboxRelay:
    return OutboxRelay(database, publisher, name=name, lease_s=30.0, poll_s=poll_s, retry_max_s=0.5)


def message(kind: str, n: int) -> TaskMessage:
    return TaskMessage(task_id=f"{kind.replace('.', '-')}-{n}", kind=kind)


async def schedule(
    database: Database, messages: list[TaskMessage], run_at: float, priority: Priority = "normal"
) -> None:
    async def write(tx: Transaction) -> None:
        for m in messages:
            await add_to_outbox(tx, task_entry(m, priority, not_before=run_at), max_pending=1)

    await database.write(write)


async def queued_ids(amqp_url: str, queue: str) -> list[str]:
    """The ids of the messages waiting in ``queue``, left there."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        ids = []
        while (m := await declared.get(fail=False)) is not None:
            ids.append(str(m.message_id))
        await channel.close()  # unacked: back to the queue
        return ids


async def test_a_delayed_entry_waits_uncounted_and_the_relay_wakes_for_it(
    outbox, publisher, unique_name, amqp_url
):
    """Not due: not published, not counted against the bound; due: published without a poll."""
    kind = unique_name("delayed")
    await publisher.declare_kind(kind)
    delayed = [message(kind, n) for n in range(3)]
    # max_pending=1 and three entries: delayed ones are not waiting for the broker.
    await schedule(outbox, delayed, run_at=time.time() + 1.0)
    first = relay(outbox, publisher, "first")
    assert await first.drain() == 0
    assert await outbox.read(pending_count) == 0
    assert await outbox.read(scheduled_count) == 3

    first.start()
    try:
        await eventually(lambda: _holds(amqp_url, task_queue(kind), 3), timeout_s=TIMEOUT_S)
    finally:
        await first.close()
    assert sorted(await queued_ids(amqp_url, task_queue(kind))) == sorted(
        m.task_id for m in delayed
    )
    assert await outbox.read(scheduled_count) == 0


async def test_a_delayed_entry_outlives_its_gateway(outbox, publisher, unique_name, amqp_url):
    """The relay that saw it accepted stops before it is due; a new one publishes it."""
    kind = unique_name("restart")
    await publisher.declare_kind(kind)
    await schedule(outbox, [message(kind, 1)], run_at=time.time() + 1.0, priority="high")
    before = relay(outbox, publisher, "before")
    before.start()
    await before.close()

    after = relay(outbox, publisher, "after")
    after.start()
    try:
        await eventually(lambda: _holds(amqp_url, task_queue(kind, "high"), 1), timeout_s=TIMEOUT_S)
    finally:
        await after.close()


async def _holds(amqp_url: str, queue: str, count: int) -> bool:
    return len(await queued_ids(amqp_url, queue)) == count


async def test_a_submitter_delays_through_the_outbox_and_the_worker_runs_it_when_due(
    outbox, publisher, connection, unique_name, tmp_path, amqp_url
):
    """The Python API: ``submit(delay_s=...)`` says ``scheduled`` with its due time, then runs."""
    kind = unique_name("submit")
    registry = TaskRegistry()
    started: list[float] = []

    @registry.task(kind)
    async def note(ctx: TaskContext, payload: None) -> str:
        started.append(time.time())
        return "ran"

    worker = Worker(
        registry,
        WorkerSettings(
            amqp_url=amqp_url, storage_dir=tmp_path, database_path=tmp_path / "worker.db"
        ),
    )
    await worker.start(connection)
    scheduler = await OutboxScheduler.open(outbox)
    # Nothing wakes a relay for another process's entry: it finds it at its next poll.
    the_relay = relay(outbox, publisher, "submitter", poll_s=0.2)
    the_relay.start()
    try:
        async with await TaskSubmitter.create(connection, scheduler=scheduler) as submitter:
            task_id = await submitter.submit(kind, None, delay_s=1.0)
            async with asyncio.timeout(TIMEOUT_S):
                events = [event async for event in submitter.events(task_id)]
    finally:
        await the_relay.close()
        await worker.stop(grace_s=5)
    assert [e.state for e in events] == ["scheduled", "running", "succeeded"]
    scheduled = events[0]
    assert scheduled.run_at is not None and scheduled.message
    assert started[0] >= scheduled.run_at  # never started early


async def test_a_submitter_without_a_scheduler_refuses_a_delay(connection, unique_name):
    async with await TaskSubmitter.create(connection) as submitter:
        with pytest.raises(ValueError, match="scheduler"):
            await submitter.submit(unique_name("nodelay"), None, delay_s=5)


async def test_a_delayed_upload_is_scheduled_then_thumbnailed(
    gateway_settings, gateway_process, worker_process
):
    """Over HTTP: ``delay_s`` and ``priority``; the stream starts with ``scheduled`` and its
    ``run_at``, and the task runs from then on."""
    worker_process()
    gateway = gateway_process()
    await gateway.wait_ready()
    async with gateway.client() as client:
        response = await upload(
            client, jpeg_bytes(), fields={"delay_s": "1", "priority": "high", "sizes": "64"}
        )
        assert response.status_code == 202, response.text
        accepted = response.json()
        status = (await client.get(accepted["status_url"])).json()
        stream = await read_stream(client, accepted["events_url"])
    events = [event for event in stream if event.event != "message"]
    assert status["state"] in ("scheduled", "running", "succeeded")
    assert events[0].event == "scheduled"
    assert json.loads(events[0].data)["message"].startswith("due at ")
    run_at = json.loads(events[0].data)["run_at"]
    running = json.loads(next(e.data for e in events if e.event == "running"))
    assert running["timestamp"] >= run_at
    assert events[-1].event == "succeeded"


async def test_a_scheduled_task_cancelled_leaves_the_outbox(gateway_app, gateway_settings):
    async with gateway_app(gateway_settings) as client:
        accepted = (await upload(client, jpeg_bytes(), fields={"delay_s": "3600"})).json()
        assert (await client.get(accepted["status_url"])).json()["state"] == "scheduled"
        response = await client.delete(accepted["status_url"])
        assert response.status_code == 200, response.text
        assert response.json()["state"] == "cancelled"
    with contextlib.closing(sqlite3.connect(gateway_settings.database_path)) as db:
        assert db.execute("SELECT count(*) FROM outbox").fetchone() == (0,)


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"priority": "urgent"}, "priority must be high or normal"),
        ({"delay_s": "soon"}, "delay_s must be a number"),
        ({"delay_s": "-1"}, "delay_s must be a number of seconds >= 0"),
        ({"delay_s": "5", "run_at": "2030-01-01T00:00:00Z"}, "not both"),
        ({"run_at": "2030-01-01T00:00:00"}, "needs a time zone"),
        ({"run_at": "tomorrow"}, "Unix time or ISO 8601"),
        ({"delay_s": "1e9"}, "delayed up to"),
    ],
)
async def test_bad_scheduling_fields_are_422(gateway_app, gateway_settings, fields, says):
    async with gateway_app(gateway_settings) as client:
        response = await upload(client, jpeg_bytes(), fields=fields)
    assert response.status_code == 422, response.text
    assert says in response.json()["error"]["message"]
