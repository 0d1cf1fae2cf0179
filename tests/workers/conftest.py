"""Fixtures for worker tests: settings, in-process workers, worker processes, cleanup."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import pytest
from aio_pika.abc import AbstractRobustConnection

import rpc
from infra.database import open_database
from workers import TaskRegistry, TaskSubmitter, Worker, WorkerSettings
from workers.events import EventConsumers, declare_event_queue
from workers.shop.consumers import OrderFulfilment
from workers.shop.contracts import ORDER_CREATED, ORDER_QUEUES, ORDERS_EXCHANGE
from workers.shop.db import ShopDb
from workers.shop.mailer import Mailer
from workers.topology import dead_queue, declare_status, retry_tier, task_queue

from ..helpers import on_storage, storage_env
from .status_tap import StatusTap
from .tasks_for_tests import TEST_TASK_NAMES

PROVIDER = "https://mail.example.test"  # the email provider respx stands in for
REPO = Path(__file__).resolve().parents[2]
RETRY_DELAYS_MS = (50, 100)
TEST_TASKS = "tests.workers.tasks_for_tests:registry"


def on_backend(request: pytest.FixtureRequest, settings: WorkerSettings) -> WorkerSettings:
    """``settings`` with the store on the backend ``request.param`` names: ``sqlite``
    (DATABASE_PATH) or ``postgresql`` (DATABASE_URL of a database of the test's own)."""
    if request.param == "postgresql":
        return replace(settings, database_url=request.getfixturevalue("pg_url"))
    return settings


@pytest.fixture
def settings(request: pytest.FixtureRequest, amqp_url: str, tmp_path: Path) -> WorkerSettings:
    """A test's worker settings; on the local directory and on S3 if it asks for
    ``storage_config`` (or ``storage``)."""
    storage = tmp_path / "storage"
    storage.mkdir()
    settings = WorkerSettings(
        amqp_url=amqp_url,
        storage_dir=storage,
        database_path=tmp_path / "taskgate.db",
        prefetch=8,
        concurrency=4,
        processes=2,
        retry_delays_ms=RETRY_DELAYS_MS,
        max_attempts=3,
        shutdown_grace_s=10,
    )
    if "storage_config" in request.fixturenames:
        return on_storage(settings, request.getfixturevalue("storage_config"))
    return settings


class Kinds:
    """Task kinds unique to one test; the ``kinds`` fixture deletes their queues afterwards."""

    def __init__(self, unique_name: Callable[[str], str]) -> None:
        self._unique_name = unique_name
        self.made: list[str] = []

    def __call__(self, suffix: str = "task") -> str:
        self.made.append(self._unique_name(suffix))
        return self.made[-1]

    def process_prefix(self) -> str:
        """A prefix for the kinds of tests/workers/tasks_for_tests.py in a worker process."""
        prefix = self._unique_name("proc")
        self.made.extend(f"{prefix}.{name}" for name in TEST_TASK_NAMES)
        return prefix


@pytest.fixture
async def kinds(
    unique_name: Callable[[str], str], pika_connection: AbstractRobustConnection
) -> AsyncIterator[Kinds]:
    made = Kinds(unique_name)
    yield made
    channel = await pika_connection.channel()
    raw = await channel.get_underlay_channel()
    for kind in made.made:
        for queue in (task_queue(kind), task_queue(kind, "high"), dead_queue(kind)):
            await raw.queue_delete(queue)
    for delay_ms in RETRY_DELAYS_MS:
        await raw.queue_delete(retry_tier(delay_ms))
        await raw.exchange_delete(retry_tier(delay_ms))
    await channel.close()


@pytest.fixture
async def status_tap(
    connection: rpc.WireConnection, pika_connection: AbstractRobustConnection
) -> AsyncIterator[StatusTap]:
    """Every copy of the status events of the ids it is told to ``watch``."""
    raw = await connection.raw_channel()
    await declare_status(raw)  # the exchange, should no worker have declared it yet
    await raw.close()
    channel = await pika_connection.channel()
    yield StatusTap(await channel.declare_queue(exclusive=True, auto_delete=True))
    await channel.close()


@pytest.fixture
async def submitter(connection: rpc.WireConnection) -> AsyncIterator[TaskSubmitter]:
    async with await TaskSubmitter.create(connection) as submitter:
        yield submitter


@pytest.fixture
async def start_worker(
    connection: rpc.WireConnection, settings: WorkerSettings
) -> AsyncIterator[Callable[..., Awaitable[Worker]]]:
    """Start in-process workers on the test's connection; stopped after the test."""
    started: list[Worker] = []

    async def start(registry: TaskRegistry, **overrides: object) -> Worker:
        worker = Worker(registry, replace(settings, **overrides))
        await worker.start(connection)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        await worker.stop(grace_s=5)


class WorkerProcess:
    """``python -m workers --tasks tests.workers.tasks_for_tests:registry`` as a child."""

    def __init__(
        self, settings: WorkerSettings, kind_prefix: str, log_path: Path, env: dict[str, str]
    ) -> None:
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "AMQP_URL": settings.amqp_url,
            **storage_env(settings),
            "DATABASE_PATH": str(settings.database_path),
            "RETRY_DELAYS_MS": ",".join(map(str, settings.retry_delays_ms)),
            "MAX_ATTEMPTS": str(settings.max_attempts),
            "SHUTDOWN_GRACE_S": str(settings.shutdown_grace_s),
            "WORKER_PROCESSES": "1",
            "TASKGATE_TEST_KIND_PREFIX": kind_prefix,
            **env,
        }
        self.log_path = log_path
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "workers",
                    "--tasks",
                    "tests.workers.tasks_for_tests:registry",
                ],
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def send(self, signum: signal.Signals) -> None:
        self.process.send_signal(signum)

    async def wait(self, timeout_s: float = 60) -> int:
        return await asyncio.to_thread(self.process.wait, timeout_s)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
async def worker_process(
    settings: WorkerSettings, tmp_path: Path
) -> AsyncIterator[Callable[..., WorkerProcess]]:
    """Factory of worker processes serving ``<prefix>.*`` test kinds; killed after the test.

    Keyword arguments are extra environment variables (``SHUTDOWN_GRACE_S="0.2"``).
    """
    processes: list[WorkerProcess] = []

    def start(kind_prefix: str, **env: str) -> WorkerProcess:
        log = tmp_path / f"worker-{len(processes)}.log"
        processes.append(WorkerProcess(settings, kind_prefix, log, env))
        return processes[-1]

    yield start
    for process in processes:
        process.kill()


async def get_dead_letters(connection: rpc.WireConnection, kind: str) -> list[rpc.wire.Delivery]:
    """The dead letters of ``kind``, left in their queue."""
    from workers.dead import peek

    return await peek(connection, kind)


async def eventually(
    condition: Callable[[], Awaitable[bool]], timeout_s: float = 60, interval_s: float = 0.1
) -> None:
    """Poll ``condition`` until it holds; for state that offers no event to await."""
    async with asyncio.timeout(timeout_s):
        while not await condition():  # noqa: ASYNC110 - polling is the point here
            await asyncio.sleep(interval_s)


@pytest.fixture
async def shop(settings: WorkerSettings) -> AsyncIterator[ShopDb]:
    database = await open_database(settings.database)
    yield await ShopDb.open(database)
    await database.close()


@pytest.fixture
async def fulfilment(
    connection: rpc.WireConnection, pika_connection: AbstractRobustConnection, shop: ShopDb
) -> AsyncIterator[EventConsumers]:
    """The three consumers in this process (so respx sees their HTTP calls), on empty queues."""
    channel = await pika_connection.channel()
    raw = await channel.get_underlay_channel()
    for queue in ORDER_QUEUES:  # orders other tests left behind
        await declare_event_queue(raw, queue, exchange=ORDERS_EXCHANGE, routing_key=ORDER_CREATED)
        await raw.queue_purge(queue)
    mailer = Mailer(base_url=PROVIDER, api_key="test-key", attempts=3, backoff_s=0.01)
    consumers = EventConsumers(OrderFulfilment(shop, mailer).subscribers())
    await consumers.start(connection)
    yield consumers
    await consumers.stop(grace_s=5)
    await mailer.close()
    await channel.close()
