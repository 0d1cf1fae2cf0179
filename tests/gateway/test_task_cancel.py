"""DELETE /tasks/{id}: a queued task never runs, a running one is stopped (asked, then forced),
a finished one is 409, a cancel racing a finish ends in one terminal event."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

import rpc
from gateway.settings import GatewaySettings
from workers import (
    TaskContext,
    TaskRegistry,
    Worker,
    WorkerSettings,
    report_progress,
)
from workers.builtin import ThumbnailRequest
from workers.metrics import MESSAGE_COPIES

from ..helpers import eventually
from .conftest import bearer, jpeg_bytes, read_stream, running_app, upload

GRACE_S = 0.5


def report_until_cancelled(seconds: float) -> str:
    """A pool job that reports progress until report_progress raises (or ``seconds`` pass)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        report_progress(10, "working")
        time.sleep(0.02)
    return "not cancelled"


def sleep_in_pool(pid_file: str) -> str:
    """A pool job that never looks at its cancel: it must be killed."""
    Path(pid_file).write_text(str(os.getpid()))
    time.sleep(120)
    return "slept"


class Kinds:
    """The handlers of these tests, one kind each, and which tasks they ran."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.ran: list[str] = []
        self.registry = TaskRegistry()
        reg = self.registry.task

        @reg(f"{prefix}.instant")
        async def instant(ctx: TaskContext, request: ThumbnailRequest) -> dict[str, str]:
            self.ran.append(ctx.task_id)
            await asyncio.sleep((hash(ctx.task_id) % 20) / 1000)  # 0-19 ms: races the cancel
            return {"ran": ctx.task_id}

        @reg(f"{prefix}.polite")
        async def polite(ctx: TaskContext, request: ThumbnailRequest) -> None:
            self.ran.append(ctx.task_id)
            while True:
                await ctx.progress(10, "working")
                await asyncio.sleep(0.02)

        @reg(f"{prefix}.deaf")
        async def deaf(ctx: TaskContext, request: ThumbnailRequest) -> None:
            self.ran.append(ctx.task_id)
            await ctx.progress(10, "working")
            await asyncio.Event().wait()

        @reg(f"{prefix}.pooled")
        async def pooled(ctx: TaskContext, request: ThumbnailRequest) -> str:
            self.ran.append(ctx.task_id)
            await ctx.progress(1, "starting")
            return await ctx.run_in_process(report_until_cancelled, 60.0)

        @reg(f"{prefix}.deafpool")
        async def deaf_pool(ctx: TaskContext, request: ThumbnailRequest) -> str:
            self.ran.append(ctx.task_id)
            await ctx.progress(1, "starting")
            return await ctx.run_in_process(sleep_in_pool, str(ctx.storage_dir / "pid"))

        @reg(f"{prefix}.pid")
        async def pid(ctx: TaskContext, request: ThumbnailRequest) -> int:
            return await ctx.run_in_process(os.getpid)


@pytest.fixture
def kinds(kind_prefix: str) -> Kinds:
    return Kinds(kind_prefix)


@pytest.fixture
async def start_worker(
    kinds: Kinds, gateway_settings: GatewaySettings, worker_connection: rpc.WireConnection
) -> AsyncIterator[Callable[[], Awaitable[Worker]]]:
    """An in-process worker on the gateway's store and storage (cancels polled every 50 ms)."""
    started: list[Worker] = []

    async def start() -> Worker:
        settings = WorkerSettings(
            amqp_url=gateway_settings.amqp_url,
            storage_dir=gateway_settings.storage_dir,
            database_path=gateway_settings.database_path,
            processes=1,
            progress_interval_s=0,
            task_cancel_poll_s=0.05,
            task_cancel_grace_s=GRACE_S,
        )
        worker = Worker(kinds.registry, settings)
        # As the worker user: the recorder takes status events only from it.
        await worker.start(worker_connection)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        await worker.stop(grace_s=5)


def app_for(settings: GatewaySettings, kinds: Kinds, kind: str) -> GatewaySettings:
    return replace(settings, upload_kind=f"{kinds.prefix}.{kind}")


async def submit(client: httpx.AsyncClient) -> str:
    response = await upload(client, jpeg_bytes(64, 48))
    assert response.status_code == 202, response.text
    return str(response.json()["task_id"])


async def wait_state(
    client: httpx.AsyncClient, task_id: str, *states: str, message: str | None = None
) -> dict:
    """The task once it is in one of ``states`` (with ``message``, if given)."""
    found: dict = {}

    async def reached() -> bool:
        found.update((await client.get(f"/tasks/{task_id}")).json())
        return found.get("state") in states and message in (None, found.get("message"))

    await eventually(reached, timeout_s=30, interval_s=0.02)
    return found


async def states_of(client: httpx.AsyncClient, task_id: str) -> list[str]:
    """The task's whole stream (it has ended: the stream closes after its terminal event)."""
    events = await read_stream(client, f"/tasks/{task_id}/events")
    return [event.event for event in events if event.event != "message"]


async def test_a_queued_task_cancelled_never_runs(gateway_settings, kinds, start_worker):
    async with running_app(app_for(gateway_settings, kinds, "instant")) as client:
        task_id = await submit(client)

        response = await client.delete(f"/tasks/{task_id}")

        assert response.status_code == 200, response.text
        assert response.json()["state"] == "cancelled"
        assert response.json()["error"] == "cancelled by ada"
        ignored = MESSAGE_COPIES.labels(f"{kinds.prefix}.instant", "ignored")
        before = ignored._value.get()
        await start_worker()
        await eventually(lambda: _true(ignored._value.get() > before), timeout_s=30)
        assert kinds.ran == []
        assert await states_of(client, task_id) == ["queued", "cancelled"]


async def test_a_running_task_is_stopped_at_its_next_progress(
    gateway_settings, kinds, start_worker
):
    await start_worker()
    async with running_app(app_for(gateway_settings, kinds, "polite")) as client:
        task_id = await submit(client)
        await wait_state(client, task_id, "running")

        response = await client.delete(f"/tasks/{task_id}")

        assert response.status_code == 202, response.text
        assert response.json() == {"task_id": task_id, "state": "running", "cancel": "requested"}
        task = await wait_state(client, task_id, "cancelled", "succeeded", "failed", "dead")
        assert task["state"] == "cancelled"
        assert task["error"] == "TaskCancelled: the task was cancelled"
        assert (await states_of(client, task_id))[-1] == "cancelled"


async def test_a_running_task_that_ignores_its_cancel_is_stopped_after_the_grace(
    gateway_settings, kinds, start_worker
):
    await start_worker()
    async with running_app(app_for(gateway_settings, kinds, "deaf")) as client:
        task_id = await submit(client)
        await wait_state(client, task_id, "running")

        assert (await client.delete(f"/tasks/{task_id}")).status_code == 202

        task = await wait_state(client, task_id, "cancelled", "succeeded", "failed", "dead")
        assert task["state"] == "cancelled"
        assert "stopped after its grace" in task["error"]


async def test_a_pool_job_sees_its_cancel_through_report_progress(
    gateway_settings, kinds, start_worker
):
    await start_worker()
    async with running_app(app_for(gateway_settings, kinds, "pooled")) as client:
        task_id = await submit(client)
        await wait_state(client, task_id, "running", message="working")

        assert (await client.delete(f"/tasks/{task_id}")).status_code == 202

        task = await wait_state(client, task_id, "cancelled", "succeeded", "failed", "dead")
        assert task["state"] == "cancelled"
        assert task["error"] == "TaskCancelled: the task was cancelled"


async def test_a_pool_job_that_ignores_its_cancel_loses_its_process_to_a_new_one(
    gateway_settings, kinds, start_worker
):
    await start_worker()
    pid_file = gateway_settings.storage_dir / "pid"
    async with running_app(app_for(gateway_settings, kinds, "deafpool")) as client:
        task_id = await submit(client)
        await eventually(lambda: _true(pid_file.exists()), timeout_s=30, interval_s=0.02)
        pid = int(pid_file.read_text())

        assert (await client.delete(f"/tasks/{task_id}")).status_code == 202

        task = await wait_state(client, task_id, "cancelled", "succeeded", "failed", "dead")
        assert task["state"] == "cancelled"
        assert "pool process killed" in task["error"]
        assert _gone(pid)
    async with running_app(app_for(gateway_settings, kinds, "pid")) as client:
        task = await wait_state(client, await submit(client), "succeeded", "failed", "dead")
        assert task["state"] == "succeeded"
        assert task["result"] != pid


async def test_cancelling_a_finished_task_is_409(gateway_settings, kinds, start_worker):
    await start_worker()
    async with running_app(app_for(gateway_settings, kinds, "instant")) as client:
        task_id = await submit(client)
        await wait_state(client, task_id, "succeeded")

        response = await client.delete(f"/tasks/{task_id}")

        assert response.status_code == 409
        assert response.json()["error"]["code"] == "finished"
        assert response.json()["error"]["state"] == "succeeded"
        assert (await client.get(f"/tasks/{task_id}")).json()["state"] == "succeeded"


async def test_only_the_owner_or_an_admin_may_cancel(gateway_settings, kinds):
    async with running_app(app_for(gateway_settings, kinds, "instant")) as client:
        task_id = await submit(client)

        other = await client.delete(f"/tasks/{task_id}", headers=bearer(gateway_settings, "bob"))
        assert other.status_code == 404
        assert other.json()["error"]["code"] == "not_found"
        assert (await client.get(f"/tasks/{task_id}")).json()["state"] == "queued"

        admin = bearer(gateway_settings, "root", admin=True)
        response = await client.delete(f"/tasks/{task_id}", headers=admin)
        assert response.status_code == 200, response.text
        assert response.json()["error"] == "cancelled by root"


async def test_cancels_racing_finishes_end_each_task_once(gateway_settings, kinds, start_worker):
    """Each cancel is sent as its task may be starting, running or finishing."""
    await start_worker()
    async with running_app(app_for(gateway_settings, kinds, "instant")) as client:
        task_ids = [await submit(client) for _ in range(20)]
        answers = await asyncio.gather(*(client.delete(f"/tasks/{t}") for t in task_ids))

        for task_id, answer in zip(task_ids, answers, strict=True):
            assert answer.status_code in (200, 202, 409), answer.text
            task = await wait_state(client, task_id, "cancelled", "succeeded", "failed", "dead")
            states = await states_of(client, task_id)
            terminal = [s for s in states if s in ("cancelled", "succeeded", "failed", "dead")]
            assert terminal == [task["state"]], (task_id, states)
            if answer.status_code == 200:
                assert task["state"] == "cancelled"
                assert task_id not in kinds.ran, "a task cancelled before it ran must not run"
            if answer.status_code == 409:
                assert task["state"] == "succeeded"
            if task["state"] == "succeeded":
                assert json.loads(json.dumps(task["result"])) == {"ran": task_id}


async def _true(value: bool) -> bool:
    return value


def _gone(pid: int) -> bool:
    """The process has exited (a zombie counts: it runs nothing)."""
    try:
        return "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
    except OSError:
        return True
