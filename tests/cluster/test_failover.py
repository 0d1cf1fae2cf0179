"""A 3-node cluster (issue 17, point 2): replicated queues, and clients that fail over.

- Every queue that keeps work, declared by the real processes, is a quorum queue with a
  replica on each of the three nodes.
- Under upload and order load, the node the gateway is connected to is SIGKILLed, then
  (once it is back) the worker's, then the rpc server's: the gateway (publisher, RPC
  client, recorder), the worker (consumer) and the rpc server reconnect to a surviving
  node; every accepted upload and order ends exactly once, and every task runs once.

Run: ``.venv/bin/python -m pytest -m cluster tests/cluster -s`` (-s shows the figures).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import NamedTuple

import httpx
import pytest

from gateway.settings import GatewaySettings
from infra.cluster import BrokerCluster
from infra.database import open_database
from infra.node import BrokerNode
from infra.ports import free_port

from ..gateway.conftest import ChildProcess, GatewayProcess, bearer, jpeg_bytes
from ..helpers import eventually
from .conftest import BOOT_TIMEOUT_S

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(BOOT_TIMEOUT_S + 900)]

CLIENTS = 3
# MUG-01's seeded stock is 500: orders beyond it would be refused (409), not lost.
MAX_ORDERS = 400
# These tests count what faults do to accepted work, not the per-user caps.
NO_CAPS = {"UPLOADS_PER_USER": "1000", "TASKS_IN_FLIGHT_PER_USER": "1000000"}


async def rows(settings: GatewaySettings, sql: str) -> list[tuple[object, ...]]:
    db = await open_database(settings.database)
    try:
        return [tuple(row) for row in await db.read(lambda tx: tx.fetch(sql))]
    finally:
        await db.close()


class Processes(NamedTuple):
    gateway: GatewayProcess
    worker: ChildProcess
    rpc: ChildProcess


@pytest.fixture
async def processes(
    gateway_settings: GatewaySettings,
    tmp_path: Path,
    worker_process: Callable[..., ChildProcess],
    rpc_process: ChildProcess,
) -> AsyncIterator[Processes]:
    """A worker (with the order consumers), the rpc server and a gateway, all on the cluster."""
    worker = worker_process(orders=True)
    gateway = GatewayProcess(gateway_settings, free_port(), tmp_path / "gateway.log", NO_CAPS)
    try:
        await gateway.wait_ready()
        yield Processes(gateway, worker, rpc_process)
    finally:
        gateway.kill()


async def test_every_queue_that_keeps_work_has_a_replica_on_each_node(
    cluster, gateway_settings, processes
):
    nodes = sorted(node.config.node_name for node in cluster.nodes)
    listing = await asyncio.to_thread(
        cluster.rabbitmqctl,
        "list_queues",
        "name",
        "type",
        "durable",
        "auto_delete",
        "exclusive",
        "members",
        "--formatter",
        "json",
    )
    queues = json.loads(listing)
    kept = {q["name"]: q for q in queues if q["durable"] and not q["exclusive"]}
    kinds = gateway_settings.upload_kind
    assert {
        f"tasks.{kinds}",
        "status.journal.0",
        "orders.email",
        "status.dead",
        "rpc.orders.quote",
        "rpc.dead",
    } <= set(kept)
    assert {name: q["type"] for name, q in kept.items()} == dict.fromkeys(kept, "quorum")
    assert {name: sorted(q["members"]) for name, q in kept.items()} == dict.fromkeys(kept, nodes)


async def until_accepted(
    send: Callable[[], Awaitable[httpx.Response]], stats: Counter[str]
) -> httpx.Response:
    """Send until 201/202, retrying 503, 504 and transport errors the same way (same key)."""
    while True:
        try:
            response = await send()
        except httpx.TransportError:
            stats["transport_error"] += 1
            await asyncio.sleep(0.2)
            continue
        stats[str(response.status_code)] += 1
        if response.status_code in (503, 504):
            await asyncio.sleep(0.2)
            continue
        return response


async def test_clients_fail_over_when_their_node_is_killed_and_nothing_is_lost_or_doubled(
    cluster: BrokerCluster, gateway_settings, processes
):
    gateway = processes.gateway
    image = jpeg_bytes(320, 240)
    stats: Counter[str] = Counter()
    results: dict[tuple[str, int], httpx.Response] = {}
    faults_done = asyncio.Event()
    numbers = iter(range(1_000_000))
    headers = bearer(gateway_settings)

    async def client() -> None:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=10, headers=headers) as http:
            # At least a few each, and on until the faults are over.
            sent = 0
            while sent < 4 or not faults_done.is_set():
                n = next(numbers)
                what = "order" if n % 2 and n < 2 * MAX_ORDERS else "upload"
                key = {"Idempotency-Key": f"{what}-{n}"}
                if what == "order":
                    order = {
                        "email": f"c{n}@example.com",
                        "lines": [{"sku": "MUG-01", "quantity": 1}],
                    }

                    def send() -> Awaitable[httpx.Response]:
                        return http.post("/orders", json=order, headers=key)  # noqa: B023
                else:

                    def send() -> Awaitable[httpx.Response]:
                        files = {"file": ("a.jpg", image)}
                        return http.post("/uploads", files=files, headers=key)  # noqa: B023

                results[(what, n)] = await until_accepted(send, stats)
                sent += 1
                await asyncio.sleep(1.0)

    async def accepted_after(count: int) -> None:
        """Until ``count`` more requests were accepted than now."""
        target = len(results) + count

        async def enough() -> bool:
            return len(results) >= target

        # Generous: on a saturated machine an RPC method queue once took two minutes to elect
        # a new leader after its node was killed (orders got 504 meanwhile, then went on).
        await eventually(enough, timeout_s=300)

    async def quote_answers() -> bool:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=5, headers=headers) as http:
            try:
                response = await http.post(
                    "/rpc/orders.quote", json={"lines": [{"sku": "MUG-01", "quantity": 1}]}
                )
            except httpx.TransportError:
                return False
            return response.status_code == 200

    figures: list[str] = []

    async def kill(node: BrokerNode, whose: str) -> None:
        killed_at = time.monotonic()
        await asyncio.to_thread(cluster.kill, node)
        await accepted_after(5)
        figures.append(
            f"{whose}'s node {node.config.node_name} killed: 5 more accepted after"
            f" {time.monotonic() - killed_at:.1f} s"
        )

    async def restart(node: BrokerNode) -> None:
        restarted_at = time.monotonic()
        await asyncio.to_thread(node.start)
        await asyncio.to_thread(cluster.wait_formed)
        # One fault at a time: its replicas back before the next node goes.
        await asyncio.to_thread(cluster.wait_quorum_safe)
        back_s = time.monotonic() - restarted_at
        figures.append(f"  back, its quorum queues' replicas online, after {back_s:.1f} s")

    async def faults() -> None:
        try:
            await accepted_after(5)
            for whose, process in (
                ("the gateway", processes.gateway),
                ("the worker", processes.worker),
                ("the rpc server", processes.rpc),
            ):
                node = cluster.node_of(process.process.pid)
                await kill(node, whose)
                # Orders are priced over RPC: the gateway's RPC client and the server answer.
                await eventually(quote_answers, timeout_s=60)
                await restart(node)
            await accepted_after(5)
        finally:
            faults_done.set()

    started = time.monotonic()
    try:
        await asyncio.gather(faults(), *(client() for _ in range(CLIENTS)))
    finally:
        for node in cluster.nodes:  # the next test gets the whole cluster
            if not node.is_running():
                await restart(node)

    async def drained() -> bool:
        return not await rows(gateway_settings, "SELECT 1 FROM outbox")

    await eventually(drained, timeout_s=120)
    orders = {k: r.json()["order_id"] for k, r in results.items() if k[0] == "order"}
    tasks = {k: r.json()["task_id"] for k, r in results.items() if k[0] == "upload"}
    ids = (*orders.values(), *tasks.values())

    async def all_finished() -> bool:
        states = dict(await rows(gateway_settings, "SELECT task_id, state FROM tasks"))
        return all(states.get(i) in ("succeeded", "failed", "dead") for i in ids)

    await eventually(all_finished, timeout_s=180)
    print(
        f"\ncluster failover: {len(orders)} orders and {len(tasks)} uploads accepted in"
        f" {time.monotonic() - started:.1f} s; answers {dict(stats)}\n  " + "\n  ".join(figures)
    )

    assert {r.status_code for k, r in results.items() if k[0] == "order"} == {201}
    assert {r.status_code for k, r in results.items() if k[0] == "upload"} == {202}
    stored_orders = [r[0] for r in await rows(gateway_settings, "SELECT order_id FROM orders")]
    assert sorted(stored_orders) == sorted(orders.values())
    stored_tasks = {r[0] for r in await rows(gateway_settings, "SELECT task_id FROM tasks")}
    assert stored_tasks == set(ids)
    states = dict(await rows(gateway_settings, "SELECT task_id, state FROM tasks"))
    assert {states[i] for i in ids} == {"succeeded"}
    for table in ("reservations", "sales", "emails"):
        done = [r[0] for r in await rows(gateway_settings, f"SELECT order_id FROM {table}")]
        assert sorted(done) == sorted(orders.values()), table
    # Each upload ran once: one `running` event per task.
    running = Counter(
        r[0]
        for r in await rows(gateway_settings, "SELECT task_id FROM events WHERE state = 'running'")
    )
    assert {running[i] for i in tasks.values()} == {1}
    # And each task ended once (an outcome republished after a failover keeps its event id).
    terminal = Counter(
        r[0]
        for r in await rows(
            gateway_settings,
            "SELECT task_id FROM events WHERE state IN ('succeeded', 'failed', 'dead')",
        )
    )
    assert {terminal[i] for i in ids} == {1}
