"""A task runs once whatever copies of its message arrive, on the real broker and store.

Copies are what a redelivery, or the outbox relay publishing a task twice
after a gateway crash (same message id, the task id), hands a worker.
"""

from __future__ import annotations

import asyncio
import sqlite3

import pytest
from prometheus_client import REGISTRY

import rpc
from infra.database import open_database
from workers import TaskContext, TaskRegistry, Worker, WorkerSettings
from workers.messages import encoder, new_event
from workers.outcomes import LEGACY_FILE_NAME, OutcomeLog, import_legacy

from ..helpers import eventually
from .conftest import get_dead_letters, on_backend

TIMEOUT_S = 30


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request: pytest.FixtureRequest, settings: WorkerSettings) -> WorkerSettings:
    """Every test here runs with the store on SQLite and on PostgreSQL."""
    return on_backend(request, settings)


def copies(kind: str, action: str) -> float:
    """Copies of ``kind`` tasks the workers ``waited`` for, ``ignored`` or ``republished``."""
    value = REGISTRY.get_sample_value(
        "taskgate_worker_message_copies_total", {"consumer": kind, "action": action}
    )
    return value or 0.0


async def reached(kind: str, action: str, count: int) -> None:
    async def done() -> bool:
        return copies(kind, action) >= count

    await eventually(done, timeout_s=TIMEOUT_S, interval_s=0.02)


async def test_a_copy_of_a_finished_task_runs_nothing_and_publishes_nothing(
    kinds, start_worker, submitter, status_tap
):
    kind = kinds()
    registry = TaskRegistry()
    runs: list[str] = []

    @registry.task(kind)
    async def once(ctx: TaskContext, payload: None) -> int:
        runs.append(ctx.task_id)
        return len(runs)

    await start_worker(registry)
    task_id = await submitter.submit(kind)
    await status_tap.watch(task_id)
    first = await submitter.wait(task_id, TIMEOUT_S)
    await submitter.submit(kind, task_id=task_id)  # the same task again
    await reached(kind, "ignored", 1)

    assert runs == [task_id]
    assert await status_tap.terminal(task_id) == [first]


async def test_a_copy_arriving_while_another_host_runs_the_task_waits_and_runs_nothing(
    kinds, amqp_url, settings, start_worker, submitter, status_tap, tmp_path
):
    kind = kinds()
    registry = TaskRegistry()
    runs: list[str] = []
    entered = asyncio.Event()
    finish = asyncio.Event()

    @registry.task(kind)
    async def slow(ctx: TaskContext, payload: None) -> str:
        runs.append(ctx.task_id)
        entered.set()
        await finish.wait()
        return "done"

    # One unacked message at a time on this host, so the broker gives the copy to the other.
    await start_worker(registry, prefetch=1)
    task_id = await submitter.submit(kind)
    await status_tap.watch(task_id)
    await asyncio.wait_for(entered.wait(), TIMEOUT_S)
    connection = await rpc.connect_wire(amqp_url, name="other-host", reconnect_interval_s=0.2)
    database = await open_database(settings.database)
    other = Worker(registry, settings, name="other-host", database=database)
    try:
        await other.start(connection)
        await submitter.submit(kind, task_id=task_id)
        await reached(kind, "waited", 1)
        finish.set()
        outcome = await submitter.wait(task_id, TIMEOUT_S)
        await reached(kind, "ignored", 1)
    finally:
        await other.stop(grace_s=5)
        await database.close()
        await connection.close()

    assert runs == [task_id]
    assert outcome.result == "done"
    assert await status_tap.terminal(task_id) == [outcome]


async def test_a_copy_republishes_an_outcome_its_dead_holder_recorded_but_never_published(
    kinds, settings, start_worker, submitter, status_tap
):
    kind = kinds()
    registry = TaskRegistry()
    runs: list[str] = []

    @registry.task(kind)
    async def never(ctx: TaskContext, payload: None) -> None:
        runs.append(ctx.task_id)

    task_id = "0" * 31 + "1"
    await status_tap.watch(task_id)
    # A worker on another host records the outcome, then dies before publishing it; its
    # lease runs out.
    database = await open_database(settings.database)
    dead = await OutcomeLog.open(
        database, holder="dead-host", lease_s=-1.0
    )  # a lease already run out
    assert (await dead.start(task_id)).run
    recorded = await dead.record(new_event(kind, task_id, "succeeded", 1, result=7))
    await dead.close()
    await database.close()

    submitter.track(task_id)
    await start_worker(registry)
    await submitter.submit(kind, task_id=task_id)
    outcome = await submitter.wait(task_id, TIMEOUT_S)

    assert runs == []
    assert outcome == recorded
    assert await status_tap.terminal(task_id) == [recorded]
    # Published now: one more copy changes nothing.
    await submitter.submit(kind, task_id=task_id)
    await reached(kind, "ignored", 1)
    assert await status_tap.terminal(task_id) == [recorded]


async def test_a_copy_of_a_task_that_went_back_to_the_queue_runs_it(settings, tmp_path):
    # A worker that stops mid-task (or loses the broker) leaves an expired claim and no outcome.
    database = await open_database(settings.database)
    try:
        first = await OutcomeLog.open(database, holder="first")
        assert (await first.start("a" * 32)).run
        first.release("a" * 32, settled=False)
        await first.close()
        second = await OutcomeLog.open(database, holder="second")
        assert (await second.start("a" * 32)).run
        await second.close()
    finally:
        await database.close()


async def test_a_malformed_copy_of_a_finished_task_is_buried_without_a_second_outcome(
    kinds, start_worker, submitter, status_tap, connection
):
    kind = kinds()
    registry = TaskRegistry()

    @registry.task(kind)
    async def once(ctx: TaskContext, payload: None) -> int:
        return 1

    await start_worker(registry)
    task_id = await submitter.submit(kind)
    await status_tap.watch(task_id)
    first = await submitter.wait(task_id, TIMEOUT_S)
    channel = await connection.raw_channel(publisher_confirms=True)
    await channel.publish(
        b"{not json",
        exchange="tasks",
        routing_key=kind,
        properties=rpc.wire.Properties(message_id=task_id, delivery_mode=2),
    )
    await channel.close()

    async def buried() -> bool:
        return len(await get_dead_letters(connection, kind)) == 1

    await eventually(buried, timeout_s=TIMEOUT_S, interval_s=0.05)

    assert await status_tap.terminal(task_id) == [first]


async def test_outcomes_of_the_per_host_file_are_moved_into_the_store(settings, tmp_path):
    # STORAGE_DIR/.outcomes.sqlite3 as the workers wrote it before issue 15.
    legacy = settings.storage_dir / LEGACY_FILE_NAME
    event = new_event("thumbnail", "b" * 32, "succeeded", 1, result={"ok": True})
    conn = sqlite3.connect(legacy)
    conn.execute(
        "CREATE TABLE IF NOT EXISTS task_outcomes (task_id TEXT PRIMARY KEY, event BLOB NOT NULL)"
    )
    conn.execute("INSERT INTO task_outcomes VALUES (?, ?)", ("b" * 32, encoder.encode(event)))
    conn.commit()
    conn.close()

    database = await open_database(settings.database)
    try:
        assert await import_legacy(database, settings.storage_dir) == 1
        assert not legacy.exists()
        assert await import_legacy(database, settings.storage_dir) == 0  # done once
        log = await OutcomeLog.open(database, holder="w")
        assert await log.get("b" * 32) == event
        assert (await log.start("b" * 32)).done
        await log.close()
    finally:
        await database.close()
