"""The task runtime in-process on the real broker: outcomes, progress, retries, dead letters."""

from __future__ import annotations

import asyncio
import os
import signal

import aiormq
import msgspec
import pytest

from rpc.errors import BrokerRefused
from workers import (
    PermanentError,
    RetryableError,
    StatusEvent,
    TaskContext,
    TaskRegistry,
    TaskSubmitter,
    report_progress,
)
from workers.messages import TaskMessage
from workers.topology import (
    ATTEMPT_HEADER,
    REASON_HEADER,
    TASKS_EXCHANGE,
    TRACEBACK_HEADER,
    declare_kind,
)

from .conftest import get_dead_letters

TIMEOUT_S = 30


class Steps(msgspec.Struct):
    steps: int


def die_on_first_call(marker: str) -> str:
    """Runs in a pool process and kills it the first time, as a crash in a C library would."""
    if not os.path.exists(marker):
        open(marker, "x").close()
        os.kill(os.getpid(), signal.SIGKILL)
    return "survived"


def count_in_pool(steps: int) -> int:
    """Runs in a pool process, reporting each step."""
    for step in range(1, steps + 1):
        report_progress(100 * step / steps, f"pool step {step}")
    return steps


async def all_events(submitter: TaskSubmitter, task_id: str) -> list[StatusEvent]:
    async with asyncio.timeout(TIMEOUT_S):
        return [event async for event in submitter.events(task_id)]


async def test_success_publishes_queued_running_progress_in_order_then_succeeded(
    kinds, start_worker, submitter
):
    kind = kinds()
    registry = TaskRegistry()

    @registry.task(kind)
    async def count(ctx: TaskContext, payload: Steps) -> dict:
        for step in range(1, payload.steps + 1):
            await ctx.progress(100 * step / payload.steps, f"step {step}")
        return {"counted": payload.steps}

    await start_worker(registry)
    task_id = await submitter.submit(kind, {"steps": 3})
    events = await all_events(submitter, task_id)

    assert [e.state for e in events] == [
        "queued",
        "running",
        "progress",
        "progress",
        "progress",
        "succeeded",
    ]
    assert [e.percent for e in events if e.state == "progress"] == [100 / 3, 200 / 3, 100]
    assert [e.message for e in events if e.state == "progress"] == ["step 1", "step 2", "step 3"]
    assert events[-1].result == {"counted": 3}
    assert {e.task_id for e in events} == {task_id}
    assert len({e.event_id for e in events}) == len(events)


async def test_progress_reported_inside_the_process_pool_arrives_in_order_before_the_outcome(
    kinds, start_worker, submitter
):
    kind = kinds()
    registry = TaskRegistry()

    @registry.task(kind)
    async def count(ctx: TaskContext, payload: Steps) -> int:
        counted = await ctx.run_in_process(count_in_pool, payload.steps)
        await ctx.progress(100, "after the pool")
        return counted

    await start_worker(registry, progress_interval_s=0)
    task_id = await submitter.submit(kind, {"steps": 4})
    events = await all_events(submitter, task_id)

    assert [(e.state, e.message) for e in events[1:]] == [
        ("running", None),
        ("progress", "pool step 1"),
        ("progress", "pool step 2"),
        ("progress", "pool step 3"),
        ("progress", "pool step 4"),
        ("progress", "after the pool"),
        ("succeeded", None),
    ]
    assert events[-1].result == 4


async def test_a_pool_job_shorter_than_the_progress_interval_publishes_no_progress(
    kinds, start_worker, submitter
):
    kind = kinds()
    registry = TaskRegistry()

    @registry.task(kind)
    async def count(ctx: TaskContext, payload: Steps) -> int:
        return await ctx.run_in_process(count_in_pool, payload.steps)

    await start_worker(registry, progress_interval_s=3600)
    task_id = await submitter.submit(kind, {"steps": 4})
    events = await all_events(submitter, task_id)

    # The reports wait for the hour to end; the job ends first, and its outcome supersedes them.
    assert [(e.state, e.message) for e in events[1:]] == [("running", None), ("succeeded", None)]


async def test_a_pool_process_that_dies_fails_its_attempt_and_the_retry_gets_a_new_pool(
    kinds, start_worker, submitter, tmp_path
):
    kind = kinds()
    registry = TaskRegistry()

    @registry.task(kind)
    async def crash(ctx: TaskContext, marker: str) -> str:
        return await ctx.run_in_process(die_on_first_call, marker)

    await start_worker(registry)
    task_id = await submitter.submit(kind, str(tmp_path / "crashed-once"))
    events = await all_events(submitter, task_id)

    assert [(e.state, e.attempt) for e in events[1:]] == [
        ("running", 1),
        ("retrying", 1),
        ("running", 2),
        ("succeeded", 2),
    ]
    assert "terminated abruptly" in (events[2].error or "")
    assert events[-1].result == "survived"


async def test_retryable_error_goes_through_delay_tiers_then_succeeds(
    kinds, start_worker, submitter
):
    kind = kinds()
    registry = TaskRegistry()
    attempts: list[int] = []

    @registry.task(kind)
    async def flaky(ctx: TaskContext, payload: None) -> str:
        attempts.append(ctx.attempt)
        if ctx.attempt < 3:
            raise RetryableError(f"not yet ({ctx.attempt})")
        return "finally"

    await start_worker(registry)
    task_id = await submitter.submit(kind)
    events = await all_events(submitter, task_id)

    assert attempts == [1, 2, 3]
    assert [(e.state, e.attempt) for e in events] == [
        ("queued", 1),
        ("running", 1),
        ("retrying", 1),
        ("running", 2),
        ("retrying", 2),
        ("running", 3),
        ("succeeded", 3),
    ]
    retrying = [e for e in events if e.state == "retrying"]
    assert [e.retry_in_ms for e in retrying] == [50, 100]
    assert retrying[0].error == "RetryableError: not yet (1)"
    assert events[-1].result == "finally"


async def test_attempts_exhausted_dead_letters_with_reason_traceback_and_attempts(
    kinds, start_worker, submitter, connection
):
    kind = kinds()
    registry = TaskRegistry()

    @registry.task(kind)
    async def down(ctx: TaskContext, payload: dict) -> None:
        raise ConnectionRefusedError("the mail server is down")

    await start_worker(registry)
    task_id = await submitter.submit(kind, {"to": "a@example.com"})
    events = await all_events(submitter, task_id)

    assert [e.state for e in events] == [
        "queued",
        *["running", "retrying"] * 2,
        "running",
        "dead",
    ]
    dead = events[-1]
    assert dead.attempt == 3
    assert dead.error == (
        "attempts exhausted (3/3): ConnectionRefusedError: the mail server is down"
    )
    letters = await get_dead_letters(connection, kind)
    assert len(letters) == 1
    headers = letters[0].properties.headers
    assert _text(headers[REASON_HEADER]) == dead.error
    assert headers[ATTEMPT_HEADER] == 3
    assert "ConnectionRefusedError" in _text(headers[TRACEBACK_HEADER])
    assert msgspec.json.decode(letters[0].body, type=TaskMessage).task_id == task_id


async def test_permanent_error_fails_at_once_without_retry_or_dead_letter(
    kinds, start_worker, submitter, connection
):
    kind = kinds()
    registry = TaskRegistry()

    @registry.task(kind)
    async def refuse(ctx: TaskContext, payload: dict) -> None:
        raise PermanentError("order 7 was cancelled")

    await start_worker(registry)
    task_id = await submitter.submit(kind, {})
    events = await all_events(submitter, task_id)

    assert [e.state for e in events] == ["queued", "running", "failed"]
    assert events[-1].error == "PermanentError: order 7 was cancelled"
    assert await get_dead_letters(connection, kind) == []


async def test_undecodable_and_invalid_messages_are_dead_lettered_and_the_worker_keeps_working(
    kinds, start_worker, submitter, connection, pika_connection
):
    kind = kinds()
    registry = TaskRegistry()

    @registry.task(kind)
    async def count(ctx: TaskContext, payload: Steps) -> int:
        return payload.steps

    await start_worker(registry)
    channel = await pika_connection.channel(publisher_confirms=True)
    raw = await channel.get_underlay_channel()
    # As the test's user, whom its worker trusts (workers/senders.py): aio-pika sets no user_id.
    sender = aiormq.spec.Basic.Properties(user_id=pika_connection.url.user)
    await raw.basic_publish(
        b"\xff not json", exchange=TASKS_EXCHANGE, routing_key=kind, properties=sender
    )
    invalid = msgspec.json.encode(
        TaskMessage(task_id="bad1", kind=kind, payload=msgspec.Raw(b'{"steps": "three"}'))
    )
    await raw.basic_publish(
        invalid,
        exchange=TASKS_EXCHANGE,
        routing_key=kind,
        properties=aiormq.spec.Basic.Properties(message_id="bad1", user_id=sender.user_id),
    )
    await channel.close()

    outcome = await submitter.submit_and_wait(kind, {"steps": 2}, timeout_s=TIMEOUT_S)

    assert (outcome.state, outcome.result) == ("succeeded", 2)
    letters = await get_dead_letters(connection, kind)
    reasons = sorted(_text(m.properties.headers[REASON_HEADER]) for m in letters)
    assert len(reasons) == 2
    assert reasons[0].startswith("undecodable task message: Expected `int`, got `str`")
    assert reasons[1].startswith("undecodable task message: JSON is malformed")


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def test_submitting_to_a_queue_declared_with_other_arguments_is_refused_not_unavailable(
    connection, submitter, unique_name
):
    kind = unique_name("other-args")
    channel = await connection.raw_channel()
    await declare_kind(channel, kind, max_length=1234)

    with pytest.raises(BrokerRefused) as refused:
        await submitter.submit(kind, {})

    assert refused.value.code == 406
    assert "PRECONDITION_FAILED" in refused.value.text
    await channel.close()
