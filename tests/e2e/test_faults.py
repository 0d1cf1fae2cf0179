"""The guarantees under faults, with real processes (issue 15, point 9).

- The broker frozen (SIGSTOP) for 2.5 s, five times, under order and upload
  load, clients retrying on 503/504 with the same Idempotency-Key: every key
  ends as exactly one order (one reservation, one sale, one email) or one
  task, and every task runs once.
  On both stores: a SQLite file, and PostgreSQL (DATABASE_URL). The default run
  freezes it once, on SQLite; the five freezes on both stores are ``faults`` tests.
- The web process SIGKILLed mid-upload: no task stays ``queued``, and no
  upload directory without a task survives the sweep.

- The broker stopped for 10 s under upload load (a ``faults`` test; the gateway
  tests stop it for less): uploads are accepted up to the outbox's bound and all
  published once it is back.

A broker node of this module's own (with the per-process users), since it is frozen.
The ``faults`` tests: ``scripts/test -m faults tests/e2e/test_faults.py -s`` (-s shows the
figures).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from gateway.settings import GatewaySettings
from infra.database import open_database
from infra.node import BrokerNode
from infra.ports import free_port
from workers.access import create_users

from ..conftest import resume
from ..gateway.conftest import ChildProcess, GatewayProcess, bearer, jpeg_bytes, settings_env
from ..helpers import eventually, take_tasks

ORDERS = 60
UPLOADS = 40
CLIENTS = 12
PAUSES = 5
PAUSE_S = 2.5
# Load before each freeze: the five freezes span the load; a single one comes early enough
# to find requests in flight.
PAUSE_EVERY_S = 1.0
PAUSE_ONCE_AFTER_S = 0.2


@pytest.fixture(scope="module")
def fault_broker(spare_broker: BrokerNode) -> Iterator[BrokerNode]:
    """The session's spare node (``own_broker``'s), running, left unfrozen after the module."""
    spare_broker.start()  # a no-op while it runs
    try:
        yield spare_broker
    finally:
        resume(spare_broker)


@pytest.fixture(scope="module")
def role_urls(fault_broker: BrokerNode) -> dict[str, str]:
    """The gateway fixtures' users, on this module's broker."""
    return create_users(fault_broker.rabbitmqctl, fault_broker.amqp_url)


class Gateway(GatewayProcess):
    """A gateway process with settings the shared fixture does not pass on."""

    def __init__(
        self, settings: GatewaySettings, port: int, log_path: Path, extra: dict[str, str]
    ) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.settings = settings
        env = {**settings_env(settings), "HOST": "127.0.0.1", "PORT": str(port), **extra}
        ChildProcess.__init__(self, [sys.executable, "-m", "gateway"], env, log_path)


@pytest.fixture
async def start_gateway(gateway_settings: GatewaySettings, tmp_path: Path) -> AsyncIterator[object]:
    started: list[Gateway] = []

    async def start(**extra: str) -> Gateway:
        log = tmp_path / f"gateway-{len(started)}.log"
        # These tests count what faults do to accepted work, not the per-user caps.
        limits = {"UPLOADS_PER_USER": "1000", "TASKS_IN_FLIGHT_PER_USER": "1000000"}
        started.append(Gateway(gateway_settings, free_port(), log, {**limits, **extra}))
        await started[-1].wait_ready()
        return started[-1]

    yield start
    for process in started:
        process.kill()


async def rows(settings: GatewaySettings, sql: str) -> list[tuple[object, ...]]:
    """The rows ``sql`` reads from the processes' store (SQLite or PostgreSQL)."""
    db = await open_database(settings.database)
    try:
        return [tuple(row) for row in await db.read(lambda tx: tx.fetch(sql))]
    finally:
        await db.close()


@pytest.fixture
def gateway_settings(request: pytest.FixtureRequest, gateway_settings: GatewaySettings) -> object:
    """The shared settings, on the store a test names by indirect parametrization."""
    if getattr(request, "param", "sqlite") == "postgresql":
        return replace(gateway_settings, database_url=request.getfixturevalue("pg_url"))
    return gateway_settings


def directories(storage: Path) -> set[str]:
    """Upload directories (the worker keeps its outcome log beside them)."""
    return {p.name for p in storage.iterdir() if p.is_dir()} if storage.exists() else set()


@contextlib.contextmanager
def frozen(node: BrokerNode) -> Iterator[None]:
    pid = node.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


async def until_accepted(send: object, stats: Counter[str]) -> httpx.Response:
    """Send until 201/202, retrying 503, 504 and timeouts the same way (same key)."""
    while True:
        try:
            response: httpx.Response = await send()  # type: ignore[operator]
        except httpx.TransportError:
            stats["transport_error"] += 1
            await asyncio.sleep(0.2)
            continue
        stats[str(response.status_code)] += 1
        if response.status_code in (503, 504):
            await asyncio.sleep(0.2)
            continue
        return response


@pytest.mark.parametrize(
    ("gateway_settings", "pauses"),
    [
        pytest.param("sqlite", 1, id="sqlite-once"),
        pytest.param("sqlite", PAUSES, id="sqlite", marks=pytest.mark.faults),
        pytest.param("postgresql", PAUSES, id="postgresql", marks=pytest.mark.faults),
    ],
    indirect=["gateway_settings"],
)
async def test_a_broker_frozen_under_load_loses_and_doubles_nothing(
    start_gateway, worker_process, rpc_process, gateway_settings, fault_broker, pauses
):
    worker_process(orders=True)
    gateway = await start_gateway()
    stats: Counter[str] = Counter()
    work: asyncio.Queue[tuple[str, int]] = asyncio.Queue()
    for n in range(ORDERS):
        work.put_nowait(("order", n))
    for n in range(UPLOADS):
        work.put_nowait(("upload", n))
    results: dict[tuple[str, int], httpx.Response] = {}
    image = jpeg_bytes(320, 240)

    async def client() -> None:
        headers = bearer(gateway_settings)
        async with httpx.AsyncClient(base_url=gateway.url, timeout=5, headers=headers) as http:
            while not work.empty():
                what, n = work.get_nowait()
                key = {"Idempotency-Key": f"{what}-{n}"}
                if what == "order":
                    order = {
                        "email": f"c{n}@example.com",
                        "lines": [{"sku": "MUG-01", "quantity": 1}],
                    }

                    def send() -> object:
                        return http.post("/orders", json=order, headers=key)  # noqa: B023
                else:

                    def send() -> object:
                        files = {"file": ("a.jpg", image)}
                        return http.post("/uploads", files=files, headers=key)  # noqa: B023

                results[(what, n)] = await until_accepted(send, stats)
                # Each client paces itself, so the load spans the pauses.
                await asyncio.sleep(0.05)

    async def faults() -> float:
        for _ in range(pauses):
            await asyncio.sleep(PAUSE_EVERY_S if pauses > 1 else PAUSE_ONCE_AFTER_S)
            with frozen(fault_broker):
                await asyncio.sleep(PAUSE_S)
        return time.monotonic()

    started = time.monotonic()
    load = asyncio.gather(*(client() for _ in range(CLIENTS)))
    last_resume, _ = await asyncio.gather(faults(), load)
    loaded = time.monotonic()

    async def drained() -> bool:
        return not await rows(gateway_settings, "SELECT 1 FROM outbox")

    await eventually(drained, timeout_s=120)
    drained_after = time.monotonic()

    orders = {k: r.json()["order_id"] for k, r in results.items() if k[0] == "order"}
    tasks = {k: r.json()["task_id"] for k, r in results.items() if k[0] == "upload"}

    async def all_finished() -> bool:
        states = dict(await rows(gateway_settings, "SELECT task_id, state FROM tasks"))
        ids = (*orders.values(), *tasks.values())
        return all(states.get(i) in ("succeeded", "failed", "dead") for i in ids)

    await eventually(all_finished, timeout_s=120)
    print(
        f"\nfaults: {len(results)} accepted in {loaded - started:.1f} s with {pauses} pauses"
        f" of {PAUSE_S} s; answers {dict(stats)}; outbox empty"
        f" {max(0.0, drained_after - last_resume):.2f} s after the last resume"
    )

    assert {r.status_code for k, r in results.items() if k[0] == "order"} == {201}
    assert {r.status_code for k, r in results.items() if k[0] == "upload"} == {202}
    # One order / one task per key (and per key nothing else: the tables hold no strays).
    assert sorted(
        r[0] for r in await rows(gateway_settings, "SELECT order_id FROM orders")
    ) == sorted(orders.values())
    stored_tasks = {r[0] for r in await rows(gateway_settings, "SELECT task_id FROM tasks")}
    assert stored_tasks == {*orders.values(), *tasks.values()}
    states = dict(await rows(gateway_settings, "SELECT task_id, state FROM tasks"))
    assert {states[i] for i in (*orders.values(), *tasks.values())} == {"succeeded"}
    for table in ("reservations", "sales", "emails"):
        assert sorted(
            r[0] for r in await rows(gateway_settings, f"SELECT order_id FROM {table}")
        ) == (sorted(orders.values())), table
    assert await rows(gateway_settings, "SELECT available FROM stock WHERE sku = 'MUG-01'") == [
        (500 - ORDERS,)
    ]
    # Each upload ran once: one `running` event per task.
    running = Counter(
        r[0]
        for r in await rows(gateway_settings, "SELECT task_id FROM events WHERE state = 'running'")
    )
    assert {running[i] for i in tasks.values()} == {1}


async def test_a_web_process_killed_mid_upload_leaves_no_ghosts(
    start_gateway, worker_process, gateway_settings, fault_broker
):
    worker_process()
    first = await start_gateway(OUTBOX_LEASE_S="2")
    storage = gateway_settings.storage_dir
    image = jpeg_bytes(320, 240)
    never = asyncio.Event()

    async def half_then_hang() -> AsyncIterator[bytes]:
        boundary = b"--cut\r\n"
        yield boundary + b'Content-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n'
        yield image[: len(image) // 2]
        await never.wait()

    async with first.client() as http:
        cut = [
            asyncio.create_task(
                http.post(
                    "/uploads",
                    content=half_then_hang(),
                    headers={"content-type": "multipart/form-data; boundary=cut"},
                )
            )
            for _ in range(3)
        ]

        async def arriving() -> bool:
            return len(directories(storage)) >= 3

        await eventually(arriving)
        # Accepted but not yet confirmed: the dying gateway holds their claims.
        with frozen(fault_broker):
            accepted = [
                await http.post("/uploads", files={"file": ("a.jpg", image)}) for _ in range(3)
            ]
            first.kill()
        for task in cut:
            task.cancel()
        await asyncio.gather(*cut, return_exceptions=True)
    assert [response.status_code for response in accepted] == [202] * 3
    orphans_at_kill = directories(storage) - {r.json()["task_id"] for r in accepted}
    assert len(orphans_at_kill) == 3

    await start_gateway(OUTBOX_LEASE_S="2", ORPHAN_GRACE_S="1", ORPHAN_SWEEP_S="0.2")

    async def clean() -> bool:
        tasks = dict(await rows(gateway_settings, "SELECT task_id, state FROM tasks"))
        return directories(storage) == set(tasks) and set(tasks.values()) == {"succeeded"}

    await eventually(clean, timeout_s=90)
    assert not await rows(gateway_settings, "SELECT 1 FROM outbox")


@pytest.mark.faults
async def test_a_stopped_broker_accepts_uploads_up_to_the_bound_and_drains_when_back(
    start_gateway, gateway_settings, fault_broker
):
    """The figures of docs/design.md ("Accepting work"): run with -s to see them."""
    bound, stop_s = 400, 10.0
    gateway = await start_gateway(OUTBOX_MAX_PENDING=str(bound), AMQP_RECONNECT_MAX_S="1")
    image = jpeg_bytes(320, 240)
    answers: Counter[int] = Counter()
    accepted: list[str] = []
    last_accept = [0.0]
    await asyncio.to_thread(fault_broker.stop)
    try:
        stopped = time.monotonic()
        deadline = stopped + stop_s

        async def client() -> None:
            async with gateway.client() as http:
                while time.monotonic() < deadline:
                    response = await http.post("/uploads", files={"file": ("a.jpg", image)})
                    answers[response.status_code] += 1
                    if response.status_code == 202:
                        accepted.append(response.json()["task_id"])
                        last_accept[0] = time.monotonic()

        await asyncio.gather(*(client() for _ in range(8)))
    finally:
        await asyncio.to_thread(fault_broker.start)
    back = time.monotonic()

    async def drained() -> bool:
        return not await rows(gateway_settings, "SELECT 1 FROM outbox")

    await eventually(drained, timeout_s=120)
    drain_s = time.monotonic() - back
    queued = await take_tasks(fault_broker.amqp_url, gateway_settings.upload_kind)
    print(
        f"\nbroker stopped {stop_s:.0f} s under 8 upload clients: answers {dict(answers)},"
        f" the bound reached after {last_accept[0] - stopped:.1f} s;"
        f" all {len(accepted)} published {drain_s:.2f} s after the node was up again"
        f" (reconnect included)"
    )
    assert len(accepted) == bound
    assert set(answers) == {202, 503}
    assert Counter(queued) == dict.fromkeys(accepted, 1)
