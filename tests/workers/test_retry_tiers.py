"""Retry tiers on the real broker: a retry that comes back to a full task queue waits."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

import rpc
from rpc.errors import BrokerUnavailable
from workers import RetryableError, TaskContext, TaskRegistry, TaskSubmitter
from workers.topology import retry_tier, task_queue

from .conftest import RETRY_DELAYS_MS, eventually

TIMEOUT_S = 60
# Small, so a handful of tasks fill the queue; the retrying ones fit in before the worker starts.
MAX_LENGTH = 4
# Tasks a quorum queue may take past its limit before it refuses (its limit is soft).
MAX_OVERSHOOT = 8
# Tasks that fail once, all retrying into a full queue.
RETRYING = MAX_LENGTH


class Job(msgspec.Struct):
    retry_once: bool = False


async def ready(connection: rpc.WireConnection, queue: str) -> tuple[int, int]:
    """(ready messages, consumers) of ``queue``."""
    raw = await connection.raw_channel()
    try:
        declared = await raw.queue_declare(queue, passive=True)
        return declared.message_count or 0, declared.consumer_count or 0
    finally:
        await raw.close()


async def fill(submitter: TaskSubmitter, kind: str) -> int:
    """Submit fillers until the broker refuses one; how many it took."""
    for taken in range(MAX_LENGTH + MAX_OVERSHOOT):
        try:
            await submitter.submit(kind, {})
        except BrokerUnavailable:
            return taken
    pytest.fail(f"the queue of {kind} took {MAX_LENGTH + MAX_OVERSHOOT} tasks past its limit")


async def test_retries_coming_back_to_a_full_queue_wait_in_their_tier_and_run_once_there_is_room(
    kinds, start_worker, connection
):
    """The queue keeps its limit for retries too: a classic tier (at most once) put them in
    past it, as the broker asks no confirm of such a dead letter, so nothing refuses it."""
    kind = kinds()
    registry = TaskRegistry()
    all_started = asyncio.Event()
    fail_now = asyncio.Event()
    attempts: dict[str, list[int]] = {}

    @registry.task(kind)
    async def job(ctx: TaskContext, payload: Job) -> str:
        if not payload.retry_once:
            return "filler"
        attempts.setdefault(ctx.task_id, []).append(ctx.attempt)
        if ctx.attempt == 1:
            if len(attempts) == RETRYING:
                all_started.set()
            await fail_now.wait()
            raise RetryableError("once more")
        return "done"

    async with await TaskSubmitter.create(connection, queue_max_length=MAX_LENGTH) as submitter:
        task_ids = [await submitter.submit(kind, {"retry_once": True}) for _ in range(RETRYING)]
        # While the worker holds the retrying tasks, it takes no filler.
        worker = await start_worker(
            registry, prefetch=RETRYING, concurrency=RETRYING, queue_max_length=MAX_LENGTH
        )
        async with asyncio.timeout(TIMEOUT_S):
            await all_started.wait()
        taken = await fill(submitter, kind)
        assert taken >= MAX_LENGTH

        # stop() cancels the consumer at once, on the channel that later acks the retrying
        # tasks: the broker delivers nothing more, and the queue stays full while the
        # retries are out. The round trip below lets the cancel go out before they end.
        stopping = asyncio.create_task(worker.stop(grace_s=TIMEOUT_S))
        assert (await ready(connection, task_queue(kind)))[0] == taken
        fail_now.set()
        await stopping  # the retry copies are in their tier, confirmed, and the tasks acked

        # They expire and the tier offers them to the full queue, which refuses them.
        tier = retry_tier(RETRY_DELAYS_MS[0])
        await eventually(lambda: _empty(connection, tier), TIMEOUT_S)
        assert (await ready(connection, task_queue(kind)))[0] == taken

        await start_worker(registry, queue_max_length=MAX_LENGTH)  # room: the retries get in
        async with asyncio.timeout(TIMEOUT_S):
            histories = [[e async for e in submitter.events(task_id)] for task_id in task_ids]

    assert attempts == {task_id: [1, 2] for task_id in task_ids}
    for events in histories:
        assert [(e.state, e.attempt) for e in events] == [
            ("queued", 1),
            ("running", 1),
            ("retrying", 1),
            ("running", 2),
            ("succeeded", 2),
        ]


async def _empty(connection: rpc.WireConnection, queue: str) -> bool:
    return (await ready(connection, queue))[0] == 0


async def test_a_retry_whose_queue_is_gone_waits_in_its_tier_until_the_queue_is_back(
    kinds, start_worker, connection
):
    """Issue 15 "Retries can vanish": a classic tier drops a retry it cannot route, e.g.
    while the kind's queue is deleted to change its length (as the broker demands)."""
    kind = kinds()
    registry = TaskRegistry()
    started = asyncio.Event()
    fail_now = asyncio.Event()
    attempts: list[int] = []

    @registry.task(kind)
    async def job(ctx: TaskContext, payload: Job) -> str:
        attempts.append(ctx.attempt)
        if ctx.attempt == 1:
            started.set()
            await fail_now.wait()
            raise RetryableError("once more")
        return "done"

    async with await TaskSubmitter.create(connection) as submitter:
        task_id = await submitter.submit(kind, {"retry_once": True})
        worker = await start_worker(registry)
        async with asyncio.timeout(TIMEOUT_S):
            await started.wait()
        stopping = asyncio.create_task(worker.stop(grace_s=TIMEOUT_S))
        raw = await connection.raw_channel()
        try:
            await raw.queue_delete(task_queue(kind))
        finally:
            await raw.close()
        fail_now.set()
        await stopping

        tier = retry_tier(RETRY_DELAYS_MS[0])
        await eventually(lambda: _empty(connection, tier), TIMEOUT_S)  # expired, unroutable

        await start_worker(registry)  # declares the queue again
        async with asyncio.timeout(TIMEOUT_S):
            events = [e async for e in submitter.events(task_id)]

    assert attempts == [1, 2]
    assert [(e.state, e.attempt) for e in events] == [
        ("queued", 1),
        ("running", 1),
        ("retrying", 1),
        ("running", 2),
        ("succeeded", 2),
    ]
