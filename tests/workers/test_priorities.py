"""Priorities: high work overtakes a kind's queued normal work, on quorum queues."""

from __future__ import annotations

import asyncio

import pytest

import rpc
from workers import TaskContext, TaskRegistry
from workers.topology import task_queue

from ..helpers import eventually

TIMEOUT_S = 60
BACKLOG = 50


async def holds(connection: rpc.WireConnection, queue: str, ready: int) -> bool:
    """Whether ``queue`` has ``ready`` messages waiting for a consumer."""
    channel = await connection.raw_channel()
    try:
        return (await channel.queue_declare(queue, passive=True)).message_count == ready
    finally:
        await channel.close()


async def test_high_work_overtakes_a_backlog_of_normal_work(
    kinds, start_worker, submitter, connection
):
    """50 normal tasks wait for one worker with one slot and a full prefetch; a high task
    submitted then runs next, not after them."""
    kind = kinds()
    registry = TaskRegistry()
    finished: list[str] = []
    gate = asyncio.Event()

    @registry.task(kind)
    async def record(ctx: TaskContext, label: str) -> None:
        await gate.wait()
        finished.append(label)

    normal_ids = [await submitter.submit(kind, f"normal {n}") for n in range(BACKLOG)]
    await start_worker(registry, concurrency=1, prefetch=16)
    # The worker holds its prefetch of normal work, one of them running (at the gate).
    await eventually(lambda: holds(connection, task_queue(kind), BACKLOG - 16))
    high_id = await submitter.submit(kind, "high", priority="high")
    # Delivered at once despite the full prefetch: the high queue has its own.
    await eventually(lambda: holds(connection, task_queue(kind, "high"), 0))
    gate.set()
    for task_id in [*normal_ids, high_id]:
        assert (await submitter.wait(task_id, TIMEOUT_S)).state == "succeeded"

    assert finished.index("high") == 1, finished[:20]
    assert sorted(finished) == sorted([*(f"normal {n}" for n in range(BACKLOG)), "high"])


def test_a_kind_may_not_end_with_the_high_suffix():
    registry = TaskRegistry()
    with pytest.raises(ValueError, match=r"may not end with '\.high'"):

        @registry.task("reports.high")
        async def build(ctx: TaskContext, payload: None) -> None: ...
