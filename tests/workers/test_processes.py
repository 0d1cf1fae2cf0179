"""Worker processes: SIGKILL loses nothing, SIGTERM drains, dead letters replay from the CLI."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import replace

from infra.ports import free_port
from workers import StatusEvent, TaskSubmitter

from ..helpers import eventually
from .conftest import REPO, get_dead_letters

TIMEOUT_S = 60


async def next_event(events: AsyncIterator[StatusEvent], state: str) -> StatusEvent:
    """Read ``events`` up to the first one in ``state``."""
    async with asyncio.timeout(TIMEOUT_S):
        async for event in events:
            if event.state == state:
                return event
    raise AssertionError(f"the stream ended before {state!r}")


async def rest(events: AsyncIterator[StatusEvent]) -> list[StatusEvent]:
    async with asyncio.timeout(TIMEOUT_S):
        return [event async for event in events]


async def test_worker_sigkilled_mid_task_task_is_redelivered_and_finishes_once(
    kinds, submitter: TaskSubmitter, worker_process
):
    prefix = kinds.process_prefix()
    task_id = await submitter.submit(f"{prefix}.block", {})
    events = submitter.events(task_id)
    first = worker_process(prefix)
    assert (await next_event(events, "running")).attempt == 1

    first.kill()
    second = worker_process(prefix)
    remaining = await rest(events)

    assert [e.state for e in remaining] == ["running", "succeeded"], second.log()
    assert remaining[-1].result == {"finished_by_pid": second.process.pid}


async def test_sigterm_lets_the_task_in_flight_finish_then_exits_zero(
    kinds, submitter: TaskSubmitter, worker_process
):
    prefix = kinds.process_prefix()
    task_id = await submitter.submit(f"{prefix}.slow", {"seconds": 1.0})
    events = submitter.events(task_id)
    worker = worker_process(prefix)
    await next_event(events, "progress")

    worker.send(signal.SIGTERM)
    remaining = await rest(events)

    assert [e.state for e in remaining] == ["succeeded"]
    assert await worker.wait() == 0, worker.log()


async def test_sigterm_returns_a_task_still_running_after_the_grace_period_to_the_queue(
    kinds, submitter: TaskSubmitter, worker_process
):
    prefix = kinds.process_prefix()
    task_id = await submitter.submit(f"{prefix}.block", {})
    events = submitter.events(task_id)
    first = worker_process(prefix, SHUTDOWN_GRACE_S="0.2")
    await next_event(events, "running")

    first.send(signal.SIGTERM)
    assert await first.wait() == 0, first.log()
    second = worker_process(prefix)
    remaining = await rest(events)

    assert [e.state for e in remaining] == ["running", "succeeded"], second.log()
    assert remaining[-1].result == {"finished_by_pid": second.process.pid}


async def test_dead_letters_are_listed_and_replayed_by_the_cli_then_succeed(
    kinds, submitter: TaskSubmitter, worker_process, settings, connection
):
    prefix = kinds.process_prefix()
    kind = f"{prefix}.flag"
    task_id = await submitter.submit(kind, {"flag": "ready"})
    worker_process(prefix)
    dead = await submitter.wait(task_id, TIMEOUT_S)
    assert (dead.state, dead.attempt) == ("dead", settings.max_attempts)

    listed = await dead_cli(settings, "list", kind)
    (settings.storage_dir / "ready").touch()
    submitter.track(task_id)
    replayed = await dead_cli(settings, "replay", kind)
    outcome = await submitter.wait(task_id, TIMEOUT_S)

    assert task_id in listed and "RetryableError: ready is missing" in listed
    assert f"replayed {task_id}" in replayed
    assert (outcome.state, outcome.attempt, outcome.result) == ("succeeded", 1, {"flag": "ready"})
    assert await get_dead_letters(connection, kind) == []


async def test_dead_cli_reports_a_kind_without_a_dead_letter_queue(kinds, settings):
    result = await run_dead_cli(settings, "list", kinds("never-declared"))

    assert result.returncode == 1
    assert "no dead-letter queue for" in result.stderr


async def dead_cli(settings, *args: str) -> str:
    result = await run_dead_cli(settings, *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


async def run_dead_cli(settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AMQP_URL": settings.amqp_url, "PYTHONPATH": str(REPO)}
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "workers.dead", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )


async def test_a_worker_started_before_the_broker_waits_for_it_and_stops_cleanly(
    settings, worker_process, kinds
):
    absent = replace(settings, amqp_url=f"amqp://guest:guest@127.0.0.1:{free_port()}/")
    process = worker_process(kinds.process_prefix(), AMQP_URL=absent.amqp_url)

    async def retrying() -> bool:
        return "retrying" in process.log()

    await eventually(retrying, timeout_s=30)
    process.send(signal.SIGTERM)
    assert await process.wait() == 0
