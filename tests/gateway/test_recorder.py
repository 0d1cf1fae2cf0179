"""The recorder: poison goes alone to status.dead with its reason, terminal is final, and
every event is recorded once and reaches every gateway's hub with one sequence number."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import aio_pika
from prometheus_client import REGISTRY
from starlette.applications import Starlette

import rpc
from gateway.app import create_app
from gateway.hub import Subscription
from gateway.recorder import Recorder
from gateway.settings import GatewaySettings
from gateway.store import StoredEvent, StoreUnavailable
from gateway.task_store import DatabaseTaskStore
from infra.database import open_database
from rpc.publish import publish_confirmed
from rpc.wire import Properties, RobustChannel, WireConnection
from workers.messages import StatusEvent, encoder, new_event
from workers.status import publish_status
from workers.topology import (
    DEFAULT_STATUS_SHARDS,
    REASON_HEADER,
    STATUS_DEAD_QUEUE,
    STATUS_EXCHANGE,
    STATUS_RECORDED_EXCHANGE,
    declare_status,
    recorded_routing_key,
    status_journal,
)

from ..helpers import eventually

KIND = "images.thumbnail"


@contextlib.asynccontextmanager
async def running(settings: GatewaySettings) -> AsyncIterator[Starlette]:
    """The app with its lifespan running, recording once its broker link is up."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):

        async def ready() -> bool:
            return bool(app.state.recorder.ready and app.state.feed.ready)

        await eventually(ready, timeout_s=30, interval_s=0.05)
        yield app


@contextlib.asynccontextmanager
async def status_channel(connection: WireConnection) -> AsyncIterator[RobustChannel]:
    async def nothing(_: Any) -> None:
        pass

    channel = await connection.open_channel(nothing, publisher_confirms=True)
    try:
        yield channel
    finally:
        await channel.close()


async def publish_raw(channel: RobustChannel, body: bytes, task_id: str, message_id: str) -> None:
    """A status event as any publisher might send it, valid or not, on ``task_id``'s shard."""
    await publish_confirmed(
        channel,
        body,
        exchange=STATUS_EXCHANGE,
        routing_key=f"{KIND}.{task_id}.progress",
        properties=Properties(message_id=message_id, correlation_id=task_id, delivery_mode=2),
    )


def event_body(task_id: str, **fields: Any) -> bytes:
    fields = {"event_id": uuid.uuid4().hex, "task_id": task_id, "kind": KIND, **fields}
    return b"{%s}" % b",".join(
        b'"%s":%s' % (key.encode(), value if isinstance(value, bytes) else encoder.encode(value))
        for key, value in fields.items()
    )


async def dead_letters(
    pika_connection: aio_pika.abc.AbstractConnection, message_ids: set[str]
) -> dict[str, aio_pika.abc.AbstractIncomingMessage]:
    """The messages of ``message_ids`` from status.dead, once all are there."""
    channel = await pika_connection.channel()
    dead = await channel.declare_queue(STATUS_DEAD_QUEUE, passive=True)
    found: dict[str, aio_pika.abc.AbstractIncomingMessage] = {}

    async def all_there() -> bool:
        while (message := await dead.get(fail=False, no_ack=True)) is not None:
            if message.message_id in message_ids:
                found[str(message.message_id)] = message
        return found.keys() == message_ids

    await eventually(all_there, timeout_s=30, interval_s=0.05)
    return found


async def recorded_states(app: Starlette, task_id: str) -> list[str]:
    return [event.state for event in await app.state.store.events_after(task_id, 0, 100)]


async def test_the_two_poison_events_of_issue_15_are_dead_lettered_alone_and_recording_goes_on(
    gateway_settings, worker_connection, pika_connection
):
    # All on one task's shard, in one burst: before, between and after the poison.
    task_id = uuid.uuid4().hex
    overflow_id, deep_id = uuid.uuid4().hex, uuid.uuid4().hex
    deep = b"[" * 3000 + b"]" * 3000
    first = new_event(KIND, task_id, "queued", 1)
    later = new_event(KIND, task_id, "running", 1)
    async with running(gateway_settings) as app, status_channel(worker_connection) as channel:
        await publish_status(channel, first)
        await publish_raw(
            channel,
            event_body(task_id, state="progress", attempt=b"9223372036854775808", timestamp=1.0),
            task_id,
            overflow_id,
        )
        await publish_raw(
            channel,
            event_body(task_id, state="succeeded", attempt=1, timestamp=1.0, result=deep),
            task_id,
            deep_id,
        )
        await publish_status(channel, later)

        async def both_recorded() -> bool:
            return await recorded_states(app, task_id) == ["queued", "running"]

        await eventually(both_recorded, timeout_s=30)
        buried = await dead_letters(pika_connection, {overflow_id, deep_id})

    assert "attempt" in buried[overflow_id].headers[REASON_HEADER]
    assert "nested deeper than" in buried[deep_id].headers[REASON_HEADER]
    assert buried[deep_id].body.startswith(b'{"event_id"')


async def test_an_event_after_its_tasks_terminal_event_is_dead_lettered_not_recorded(
    gateway_settings, worker_connection, pika_connection
):
    task_id = uuid.uuid4().hex
    events = [
        new_event(KIND, task_id, "queued", 1),
        new_event(KIND, task_id, "succeeded", 1, result={"ok": True}),
        new_event(KIND, task_id, "running", 2),
        new_event(KIND, task_id, "failed", 2, error="forged"),
    ]
    async with running(gateway_settings) as app, status_channel(worker_connection) as channel:
        for event in events:
            await publish_status(channel, event)
        buried = await dead_letters(pika_connection, {events[2].event_id, events[3].event_id})
        states = await recorded_states(app, task_id)

    assert states == ["queued", "succeeded"]
    for late in events[2:]:
        assert "already ended succeeded" in buried[late.event_id].headers[REASON_HEADER]


async def test_a_succeeded_event_the_rpc_user_forges_is_dead_lettered_not_recorded(
    gateway_settings, worker_connection, role_urls, pika_connection
):
    """Issue 16: the rpc user put a ``succeeded`` event (its outputs another user's file and a
    javascript: URL) into the journal through the default exchange, and it was recorded."""
    task_id = uuid.uuid4().hex
    forged = new_event(
        KIND, task_id, "succeeded", 1, result={"outputs": {"x": "javascript:alert(1)"}}
    )
    async with running(gateway_settings) as app:
        forger = await rpc.connect_wire(role_urls["rpc"], name="test-forger")
        raw = await forger.raw_channel(publisher_confirms=True)
        await raw.basic_publish(
            encoder.encode(forged),
            routing_key=status_journal(0),  # through amq.default, which the rpc user writes to
            properties=Properties(
                message_id=forged.event_id, correlation_id=task_id, delivery_mode=2
            ),
        )
        await forger.close()
        async with status_channel(worker_connection) as channel:  # a real worker's, after it
            await publish_status(channel, new_event(KIND, task_id, "queued", 1))

        async def recorded() -> bool:
            return await recorded_states(app, task_id) == ["queued"]

        await eventually(recorded, timeout_s=30)
        buried = await dead_letters(pika_connection, {forged.event_id})
        states = await recorded_states(app, task_id)

    assert buried[forged.event_id].headers[REASON_HEADER] == (
        "untrusted sender: user_id 'rpc' (only 'worker' may send this)"
    )
    assert states == ["queued"]


async def take_until_terminal(subscription: Subscription) -> list[StoredEvent]:
    events: list[StoredEvent] = []
    while not (events and events[-1].terminal):
        await subscription.wait(5)
        assert subscription.ended is None
        events.extend(subscription.take())
    return events


def recorded_total() -> float:
    return sum(
        REGISTRY.get_sample_value("taskgate_events_recorded_total", {"state": state}) or 0.0
        for state in ("queued", "running", "progress", "succeeded")
    )


async def test_two_gateways_record_each_event_once_and_both_hubs_get_it_with_one_number(
    gateway_settings, worker_connection, tmp_path
):
    # Two processes' worth of gateway in one: each app has its own broker connection.
    tasks = [uuid.uuid4().hex for _ in range(24)]
    states: list[tuple[str, dict[str, Any]]] = [
        ("queued", {}),
        ("running", {}),
        ("progress", {"percent": 50.0}),
        ("succeeded", {"result": 1}),
    ]
    published: dict[str, list[StatusEvent]] = {task_id: [] for task_id in tasks}
    other = replace(gateway_settings, storage_dir=tmp_path / "storage-2")
    async with (
        running(gateway_settings) as first,
        running(other) as second,
        status_channel(worker_connection) as channel,
    ):
        before = recorded_total()
        with contextlib.ExitStack() as stack:
            subscriptions = {
                (app_index, task_id): stack.enter_context(app.state.hub.subscribe(task_id))
                for app_index, app in enumerate((first, second))
                for task_id in tasks
            }
            # Interleaved across tasks, so every shard has several tasks in flight.
            for state, fields in states:
                for task_id in tasks:
                    event = new_event(KIND, task_id, state, 1, **fields)  # type: ignore[arg-type]
                    published[task_id].append(event)
                    await publish_status(channel, event)
            seen = dict(
                zip(
                    subscriptions,
                    await asyncio.gather(*map(take_until_terminal, subscriptions.values())),
                    strict=True,
                )
            )
        stored = {
            task_id: await first.state.store.events_after(task_id, 0, 100) for task_id in tasks
        }
        recorded = recorded_total() - before

    assert recorded == len(tasks) * len(states)
    for task_id in tasks:
        expected = [(seq, encoder.encode(event)) for seq, event in enumerate(published[task_id], 1)]
        assert [(event.seq, event.body) for event in stored[task_id]] == expected
        for app_index in (0, 1):
            assert [(event.seq, event.body) for event in seen[app_index, task_id]] == expected


class FaultyStore:
    """The real store, but a write with ``bad_id`` in it fails as a constraint would, and the
    first ``unavailable`` writes find the store unavailable."""

    def __init__(self, store: Any, bad_id: str, unavailable: int) -> None:
        self.store = store
        self.bad_id = bad_id
        self.unavailable = unavailable

    async def record(self, events: Any, *, owner: str | None = None) -> Any:
        if self.unavailable:
            self.unavailable -= 1
            raise StoreUnavailable("the test holds the store")
        if any(event.event_id == self.bad_id for event, _ in events):
            raise sqlite3.IntegrityError("CHECK constraint failed: the test's")
        return await self.store.record(events, owner=owner)


async def test_a_write_error_on_one_event_dead_letters_it_alone_and_the_rest_is_recorded(
    tmp_path, amqp_url, connection, pika_connection
):
    task_id = uuid.uuid4().hex
    events = [new_event(KIND, task_id, state, 1) for state in ("queued", "running", "retrying")]
    database = await open_database(str(tmp_path / "store.db"), write_timeout_s=2.0)
    store = await DatabaseTaskStore.open(database)
    # Its own connection: a recorder on the test's connection would outlive nothing.
    recorder_connection = await rpc.connect_wire(amqp_url, name="test-recorder")
    recorder = Recorder(
        FaultyStore(store, bad_id=events[1].event_id, unavailable=2),  # type: ignore[arg-type]
        shards=DEFAULT_STATUS_SHARDS,
    )
    try:
        await recorder.start(recorder_connection)
        async with status_channel(connection) as channel:
            for event in events:
                await publish_status(channel, event)
        buried = await dead_letters(pika_connection, {events[1].event_id})

        async def recorded() -> bool:
            return len(await store.events_after(task_id, 0, 10)) == 2

        await eventually(recorded, timeout_s=30)
        stored = await store.events_after(task_id, 0, 10)
    finally:
        await recorder.close()
        await recorder_connection.close()
        await store.close()
        await database.close()

    assert [(event.seq, event.state) for event in stored] == [(1, "queued"), (2, "retrying")]
    assert "CHECK constraint failed" in buried[events[1].event_id].headers[REASON_HEADER]


async def test_an_event_waiting_when_the_gateway_starts_is_recorded_and_acked_once(
    gateway_settings, worker_connection, tmp_path
):
    # The first deliveries arrive before the recorder's channel is handed back to it.
    waiting = new_event(KIND, uuid.uuid4().hex, "queued", 1)
    marker = new_event(KIND, uuid.uuid4().hex, "queued", 1)
    async with status_channel(worker_connection) as channel:
        await declare_status(await channel.get_underlay_channel())
        await publish_status(channel, waiting)
        async with running(gateway_settings) as first:

            async def recorded_first() -> bool:
                return await recorded_states(first, waiting.task_id) == ["queued"]

            await eventually(recorded_first, timeout_s=30)
        # A later gateway, with a store of its own, must not get it again.
        later = replace(gateway_settings, database_path=tmp_path / "later.db")
        async with running(later) as second:
            # On the waiting event's shard, behind it if it had come back.
            await publish_raw(channel, encoder.encode(marker), waiting.task_id, marker.event_id)

            async def recorded_marker() -> bool:
                return await recorded_states(second, marker.task_id) == ["queued"]

            await eventually(recorded_marker, timeout_s=30)
            again = await recorded_states(second, waiting.task_id)

    assert again == []


async def test_a_recorded_event_from_any_user_but_a_gateways_reaches_no_stream(
    gateway_settings, amqp_url, role_urls
):
    """The live feed takes what a recorder fanned out, and nothing another user put there."""
    task_id = uuid.uuid4().hex
    async with running(gateway_settings) as app:
        with app.state.hub.subscribe(task_id) as subscription:
            for url, state in ((amqp_url, "succeeded"), (role_urls["web"], "running")):
                sender = await rpc.connect_wire(url, name="test-recorded")
                raw = await sender.raw_channel(publisher_confirms=True)
                await raw.basic_publish(
                    b"{}",
                    exchange=STATUS_RECORDED_EXCHANGE,
                    routing_key=recorded_routing_key(task_id, 1, state),
                )
                await sender.close()
            await subscription.wait(30)
            states = [event.state for event in subscription.take()]

    assert states == ["running"]
