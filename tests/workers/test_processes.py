"""Worker processes: SIGKILL loses nothing and leaves nothing behind, SIGTERM drains, dead
letters replay from the CLI."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

from workers import StatusEvent, TaskSubmitter, WorkerSettings

from ..helpers import eventually, unreachable_amqp_url
from .conftest import REPO, get_dead_letters

TIMEOUT_S = 60
# A killed worker's claim on its task holds until its lease runs out: a short one, so the
# redelivered copy runs within seconds instead of the default 30 s.
LEASE_S = "3"


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
    first = worker_process(prefix, TASK_LEASE_S=LEASE_S)
    assert (await next_event(events, "running")).attempt == 1

    first.kill()
    second = worker_process(prefix, TASK_LEASE_S=LEASE_S)
    remaining = await rest(events)

    assert [e.state for e in remaining] == ["running", "succeeded"], second.log()
    assert remaining[-1].result == {"finished_by_pid": second.process.pid}


# Enough kills at each point of the pool's start that a leak cannot pass unseen: killed
# while the worker waits for its forkserver's first fork, none survived 12 of 12 before
# pool processes learned to exit with the worker.
POOL_START_KILLS = 12


async def test_a_worker_killed_while_its_pool_starts_leaves_no_process_behind(
    kinds, submitter: TaskSubmitter, settings, tmp_path
):
    prefix = kinds.process_prefix()
    for kill in range(POOL_START_KILLS):
        # A fresh task each time: the killed workers' tasks return too, but a quorum
        # queue drops a message after its delivery limit.
        await submitter.submit(f"{prefix}.pooled", {})
        log_path = tmp_path / f"worker-{kill}.log"
        worker = start_worker_in_own_session(settings, prefix, log_path)
        try:
            # Alternately: forkserver starting (its parent-death signal not yet asked
            # for) with the worker's request in its pipe, and a pool process just forked.
            until = ("request", "fork")[kill % 2]
            await asyncio.to_thread(wait_for_pool_start, worker, until, log_path)
        finally:
            worker.kill()
            worker.wait()
        survivors = await asyncio.to_thread(wait_for_session_to_end, worker.pid)

        assert survivors == [], f"kill {kill} (at {until}) left {survivors}"


def start_worker_in_own_session(
    settings: WorkerSettings, kind_prefix: str, log_path: Path
) -> subprocess.Popen[bytes]:
    """A worker process whose descendants can all be found by their session id (its pid)."""
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "AMQP_URL": settings.amqp_url,
        "STORAGE_DIR": str(settings.storage_dir),
        "DATABASE_PATH": str(settings.database_path),
        "RETRY_DELAYS_MS": ",".join(map(str, settings.retry_delays_ms)),
        "WORKER_PROCESSES": "2",
        "TASKGATE_TEST_KIND_PREFIX": kind_prefix,
    }
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "workers", "--tasks", "tests.workers.tasks_for_tests:registry"],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


@dataclass(frozen=True)
class Proc:
    """A process as /proc/<pid>/stat shows it."""

    pid: int
    state: str
    session: int
    # Clock ticks after boot: with the pid, names the process even once its pid is reused.
    start: int

    @classmethod
    def read(cls, pid: int) -> Proc | None:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return None
        # After "pid (comm)": state is field 3, session 6, starttime 22 (proc(5)).
        fields = stat.rsplit(")", 1)[1].split()
        return cls(pid, fields[0], int(fields[3]), int(fields[19]))


def proc_text(pid: int, name: str) -> str:
    try:
        return (
            Path(f"/proc/{pid}/{name}").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def children(pid: int) -> list[int]:
    return [
        int(child)
        for task in Path(f"/proc/{pid}/task").glob("*")
        for child in proc_text(pid, f"task/{task.name}/children").split()
    ]


def wait_for_pool_start(worker: subprocess.Popen[bytes], until: str, log_path: Path) -> None:
    """Return as soon as ``worker``'s process pool has reached ``until`` in its start.

    "request": the worker waits for its new forkserver to fork the first pool process
    (the job's start data already in the pipe); "fork": that process exists.
    """
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise AssertionError(
                f"the worker exited before its pool started:\n{log_path.read_text()}"
            )
        forkservers = [
            child
            for child in children(worker.pid)
            if "multiprocessing.forkserver" in proc_text(child, "cmdline")
        ]
        if any(children(forkserver) for forkserver in forkservers):
            return
        if until == "request" and forkservers and "pipe_read" in proc_text(worker.pid, "wchan"):
            return
        time.sleep(0.001)  # /proc offers nothing to wait on
    raise AssertionError(f"the worker's pool did not start in {TIMEOUT_S} s")


def wait_for_session_to_end(session: int, timeout_s: float = 10) -> list[str]:
    """Wait for every process of ``session`` to exit; kill and describe those that do not."""
    deadline = time.monotonic() + timeout_s
    while (left := session_members(session)) and time.monotonic() < deadline:
        time.sleep(0.05)
    survivors = []
    for proc in left:
        survivors.append(f"{proc.pid}: {proc_text(proc.pid, 'cmdline')[:120]}")
        if Proc.read(proc.pid) == proc:  # still the same process, not a reused pid
            os.kill(proc.pid, signal.SIGKILL)
    return survivors


def session_members(session: int) -> list[Proc]:
    """The processes of ``session`` still running (a zombie has exited)."""
    procs = (Proc.read(int(name)) for name in os.listdir("/proc") if name.isdigit())
    return [p for p in procs if p is not None and p.session == session and p.state != "Z"]


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
    absent = replace(settings, amqp_url=unreachable_amqp_url())
    process = worker_process(kinds.process_prefix(), AMQP_URL=absent.amqp_url)

    async def retrying() -> bool:
        return "retrying" in process.log()

    await eventually(retrying, timeout_s=30)
    process.send(signal.SIGTERM)
    assert await process.wait() == 0
