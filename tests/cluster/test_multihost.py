"""Many hosts on one machine (issue 17, point 3): network namespaces, a fault, and counts.

Hosts (``infra.netns``: each a network namespace with an address of its own): two
gateways, two workers and an rpc server. The 3-node broker cluster and the S3 server run
in the root namespace, bound to the bridge's address, which every host reaches; the
store is one SQLite file on the shared disk. Load: uploads and orders spread over both
gateways, an SSE client per upload that reconnects to the other gateway with
Last-Event-ID, and RPC calls through both. Fault: a worker host loses power (its link
goes down, then every process in it is killed) while it holds a task. Afterwards every
message is counted, as RabbitMQ's Jepsen tests do: lost, duplicated, unexpected.

Run: ``.venv/bin/python -m pytest -m multihost tests/cluster/test_multihost.py -s``
(-s prints the table).
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import httpx_sse
import pytest

from gateway.settings import GatewaySettings
from infra.cluster import BrokerCluster
from infra.netns import Network
from infra.ports import free_port
from infra.s3_server import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, S3Server
from infra.storage import StorageConfig
from workers.access import create_users

from ..conftest import TEST_BUCKET
from ..gateway.conftest import ChildProcess, GatewayProcess, bearer, jpeg_bytes, settings_env
from ..gateway.test_streams import status_events
from ..helpers import eventually
from .conftest import BOOT_TIMEOUT_S
from .test_failover import NO_CAPS, rows

pytestmark = [pytest.mark.multihost, pytest.mark.timeout(BOOT_TIMEOUT_S + 600)]

HOSTS = ("gw1", "gw2", "w1", "w2", "rpc")
TERMINAL = ("succeeded", "failed", "dead", "cancelled")
# Seconds between AMQP heartbeats: a host that lost power is noticed after two missed ones.
HEARTBEAT_S = 5


@pytest.fixture(scope="module")
def network() -> Iterator[Network]:
    network = Network.create(HOSTS)
    try:
        yield network
    finally:
        network.close()


@pytest.fixture(scope="module")
def hosts_cluster(
    network: Network, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BrokerCluster]:
    """Three nodes listening on the bridge's address."""
    ports = [(free_port(), free_port(), None) for _ in range(3)]
    base_dir = tmp_path_factory.mktemp("multihost-cluster")
    configs = BrokerCluster.configs(base_dir, ports, bind_address=network.gateway_address)
    cluster = BrokerCluster(configs)
    try:
        cluster.start(timeout_s=BOOT_TIMEOUT_S)
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def role_urls(hosts_cluster: BrokerCluster) -> dict[str, str]:
    """The per-process users, each URL naming every node, with short heartbeats."""
    urls = create_users(hosts_cluster.rabbitmqctl, hosts_cluster.nodes[0].amqp_url)
    return {
        role: hosts_cluster.spread(
            urlunsplit(urlsplit(url)._replace(query=f"heartbeat={HEARTBEAT_S}"))
        )
        for role, url in urls.items()
    }


@pytest.fixture(scope="module")
def s3(network: Network, tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = S3Server(tmp_path_factory.mktemp("multihost-s3"), host=network.gateway_address)
    try:
        server.start()
        server.create_bucket(TEST_BUCKET)
        yield server
    finally:
        server.stop()


@pytest.fixture
def storage_config(s3: S3Server, tmp_path: Path) -> StorageConfig:
    """Uploads and outputs in S3 (the gateway fixtures then use it)."""
    return StorageConfig(
        url=f"s3://{TEST_BUCKET}/multihost",
        local_dir=tmp_path / "storage",
        endpoint_url=s3.endpoint_url,
        region=REGION,
        access_key_id=ACCESS_KEY_ID,
        secret_access_key=SECRET_ACCESS_KEY,
        part_bytes=5 * 1024 * 1024,
    )


@dataclass
class Deployment:
    settings: GatewaySettings
    gateways: list[GatewayProcess]
    workers: dict[str, ChildProcess] = field(default_factory=dict)


@pytest.fixture
async def deployment(
    network: Network,
    gateway_settings: GatewaySettings,
    storage_config: StorageConfig,
    kind_prefix: str,
    tmp_path: Path,
    worker_process,
    role_urls: dict[str, str],
) -> AsyncIterator[Deployment]:
    """Both gateways, the rpc server and the first worker, each on its own host.

    Uploads are ``waiting`` tasks: each holds its worker until the test opens its gate, so
    the test knows a task is mid-way when it pulls the plug.
    """
    settings = replace(gateway_settings, upload_kind=f"{kind_prefix}.waiting")
    rpc = ChildProcess(
        network["rpc"].argv([sys.executable, "-m", "rpc", "workers.services:server"]),
        {**settings_env(settings), "AMQP_URL": role_urls["rpc"]},
        tmp_path / "rpc.log",
    )
    gateways = [
        GatewayProcess(settings, 8000, tmp_path / f"{name}.log", NO_CAPS, host=network[name])
        for name in ("gw1", "gw2")
    ]
    try:
        for gateway in gateways:
            await gateway.wait_ready()
        yield Deployment(
            settings, gateways, {"w1": worker_process(orders=True, host=network["w1"])}
        )
    finally:
        for process in (rpc, *gateways):
            process.kill()


@dataclass
class Tally:
    """What the load did and saw."""

    uploads: dict[str, str] = field(default_factory=dict)  # task id -> gateway it went to
    orders: dict[str, str] = field(default_factory=dict)
    answers: Counter[str] = field(default_factory=Counter)
    streams: dict[str, list[tuple[int, str]]] = field(default_factory=dict)
    reconnects: int = 0
    rpc: Counter[str] = field(default_factory=Counter)
    rpc_slowest_failure_s: float = 0.0
    rpc_last: str = ""


async def follow(
    gateways: list[GatewayProcess], token: dict[str, str], url: str
) -> list[tuple[int, str]]:
    """A task's events as an SSE client sees them: the first on one gateway, then on to the
    end from the next with Last-Event-ID (and so on, round the gateways, after any break)."""
    seen: list[tuple[int, str]] = []
    for gateway in itertools.cycle(gateways):
        headers = {**token, **({"Last-Event-ID": str(seen[-1][0])} if seen else {})}
        try:
            async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
                async with httpx_sse.aconnect_sse(http, "GET", url, headers=headers) as source:
                    if source.response.status_code == 204:
                        return seen
                    source.response.raise_for_status()
                    async for event in source.aiter_sse():
                        if not status_events([event]):  # a retry hint
                            continue
                        seen.append((int(event.id), event.event))
                        if event.event in TERMINAL:
                            return seen
                        if len(seen) == 1:
                            break  # over to the other gateway
        except (httpx.TransportError, httpx.HTTPStatusError, httpx_sse.SSEError):
            await asyncio.sleep(0.2)
    raise AssertionError("unreachable")


async def test_a_worker_host_that_loses_power_mid_task_loses_and_doubles_nothing(
    network: Network, deployment: Deployment, worker_process, tmp_path: Path
):
    settings, gateways = deployment.settings, deployment.gateways
    token = bearer(settings)
    image = jpeg_bytes(64, 48)
    tally = Tally()
    numbers = itertools.count()
    followers: list[asyncio.Task[None]] = []
    load_done = asyncio.Event()

    def open_gate(task_id: str) -> None:
        gate = settings.storage_dir / task_id / "gate-1"
        gate.parent.mkdir(parents=True, exist_ok=True)
        gate.touch()

    async def send(gateway: GatewayProcess, what: str, n: int) -> str:
        """Until accepted (same idempotency key on every retry); the new id."""
        key = {**token, "Idempotency-Key": f"{what}-{n}"}
        async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
            while True:
                try:
                    if what == "order":
                        order = {
                            "email": f"c{n}@example.com",
                            "lines": [{"sku": "MUG-01", "quantity": 1}],
                        }
                        response = await http.post("/orders", json=order, headers=key)
                    else:
                        response = await http.post(
                            "/uploads", files={"file": ("a.jpg", image)}, headers=key
                        )
                except httpx.TransportError:
                    tally.answers["transport error"] += 1
                    await asyncio.sleep(0.2)
                    continue
                tally.answers[str(response.status_code)] += 1
                if response.status_code in (201, 202):
                    body = response.json()
                    return body["order_id"] if what == "order" else body["task_id"]
                assert response.status_code in (503, 504), response.text
                await asyncio.sleep(0.2)

    async def track(task_id: str, url: str) -> None:
        tally.streams[task_id] = await follow(gateways, token, url)

    async def upload(n: int, *, gate_open: bool = True) -> str:
        gateway = gateways[n % 2]
        task_id = await send(gateway, "upload", n)
        tally.uploads[task_id] = gateway.url
        if gate_open:
            open_gate(task_id)
        followers.append(asyncio.create_task(track(task_id, f"/tasks/{task_id}/events")))
        return task_id

    async def client() -> None:
        while not load_done.is_set():
            n = next(numbers)
            if n % 2:
                tally.orders[await send(gateways[n // 2 % 2], "order", n)] = "order"
            else:
                await upload(n)
            await asyncio.sleep(0.5)

    async def rpc_probe() -> None:
        """Quotes through both gateways: each answers or fails fast, never hangs."""
        async with httpx.AsyncClient(timeout=30, headers=token) as http:
            for n in itertools.count():
                if load_done.is_set():
                    return
                started = time.monotonic()
                try:
                    response = await http.post(
                        f"{gateways[n % 2].url}/rpc/orders.quote",
                        json={"lines": [{"sku": "MUG-01", "quantity": 1}]},
                    )
                    outcome = str(response.status_code)
                except httpx.TransportError as exc:
                    outcome = type(exc).__name__
                tally.rpc[outcome] += 1
                tally.rpc_last = outcome
                if outcome != "200":
                    tally.rpc_slowest_failure_s = max(
                        tally.rpc_slowest_failure_s, time.monotonic() - started
                    )
                await asyncio.sleep(0.5)

    async def running(task_id: str) -> bool:
        sql = f"SELECT 1 FROM events WHERE task_id = '{task_id}' AND state = 'running'"
        return bool(await rows(settings, sql))

    # A task the first worker host holds: the second worker starts only once it runs there.
    held = await upload(next(numbers), gate_open=False)
    await eventually(lambda: running(held), timeout_s=120)
    deployment.workers["w2"] = worker_process(orders=True, host=network["w2"])
    load = [asyncio.create_task(client()) for _ in range(3)] + [asyncio.create_task(rpc_probe())]

    async def accepted_after(count: int) -> None:
        target = len(tally.uploads) + len(tally.orders) + count

        async def enough() -> bool:
            return len(tally.uploads) + len(tally.orders) >= target

        await eventually(enough, timeout_s=300)

    faults: list[tuple[str, str]] = []
    started = time.monotonic()
    try:
        await accepted_after(6)
        cut_at = time.monotonic()
        killed = await asyncio.to_thread(network["w1"].power_off)
        open_gate(held)  # the task can now finish, on the other host only

        async def held_done() -> bool:
            sql = f"SELECT state FROM tasks WHERE task_id = '{held}'"
            return (await rows(settings, sql))[0][0] in TERMINAL

        await eventually(held_done, timeout_s=180)
        sql = f"SELECT count(*) FROM events WHERE task_id = '{held}' AND state = 'running'"
        runs = (await rows(settings, sql))[0][0]
        faults.append(
            (
                "worker host w1 loses power mid-task",
                f"{killed} processes; its task run again and done on w2"
                f" {time.monotonic() - cut_at:.1f} s later",
            )
        )
        await accepted_after(6)
    finally:
        load_done.set()
        await asyncio.gather(*load, return_exceptions=True)
    await asyncio.wait_for(asyncio.gather(*followers), timeout=300)
    await report(settings, tally, faults, time.monotonic() - started)
    assert runs == 2  # started on w1, then the whole task again on w2


async def report(
    settings: GatewaySettings, tally: Tally, faults: list[tuple[str, str]], took_s: float
) -> None:
    """Count every task, order and stream against the store; print the table; assert."""

    async def drained() -> bool:
        return not await rows(settings, "SELECT 1 FROM outbox")

    await eventually(drained, timeout_s=120)
    ids = set(tally.uploads) | set(tally.orders)

    async def all_finished() -> bool:
        states = dict(await rows(settings, "SELECT task_id, state FROM tasks"))
        return all(states.get(i) in TERMINAL for i in ids)

    await eventually(all_finished, timeout_s=180)
    terminal = Counter(
        r[0]
        for r in await rows(settings, f"SELECT task_id FROM events WHERE state IN {TERMINAL!r}")
    )
    done: dict[str, Counter[str]] = {}
    for table in ("reservations", "sales", "emails"):
        done[table] = Counter(r[0] for r in await rows(settings, f"SELECT order_id FROM {table}"))
    history: dict[str, list[tuple[int, str]]] = {}
    for task_id, seq, state in await rows(
        settings, "SELECT task_id, seq, state FROM events ORDER BY seq"
    ):
        history.setdefault(str(task_id), []).append((int(seq), str(state)))  # type: ignore[call-overload]

    def counts(expected: set[str], got: Counter[str]) -> tuple[int, int, int, int]:
        return (
            len(expected),
            len(expected - set(got)),
            sum(1 for i in expected if got[i] > 1),
            len(set(got) - expected),
        )

    lines = [("tasks terminal (uploads + orders)", counts(ids, terminal))]
    lines += [(f"orders in {table}", counts(set(tally.orders), got)) for table, got in done.items()]
    streams_wrong = [t for t, seen in tally.streams.items() if seen != history.get(t)]
    table = [
        f"multihost run: {took_s:.0f} s; HTTP answers {dict(tally.answers)}",
        *(f"  fault: {what}: {figure}" for what, figure in faults),
        f"  rpc quotes {dict(tally.rpc)}; slowest failure {tally.rpc_slowest_failure_s:.1f} s",
        f"  {'what':36} {'accepted':>8} {'lost':>5} {'dup':>5} {'unexp':>5}",
        *(f"  {what:36} {a:8} {lost:5} {dup:5} {unexp:5}" for what, (a, lost, dup, unexp) in lines),
        f"  {'SSE streams = store history':36} {len(tally.streams):8} wrong: {len(streams_wrong)}",
    ]
    table += [f"    {t}: saw {tally.streams[t]}, store {history.get(t)}" for t in streams_wrong[:3]]
    print("\n" + "\n".join(table))

    for what, (_, lost, dup, unexp) in lines:
        assert (lost, dup, unexp) == (0, 0, 0), what
    assert streams_wrong == []
    assert set(tally.streams) == set(tally.uploads)
    # RPC recovered: the last quote was answered.
    assert tally.rpc_last == "200"
