"""Many hosts on one machine (issue 17, point 3): network namespaces, faults, and counts.

Hosts (``infra.netns``: each a network namespace with an address of its own): three
RabbitMQ nodes (one cluster, named ``taskgate@<address>``), PostgreSQL, the S3 server
(moto), two gateways, two workers and an rpc server. Load: uploads and orders spread
over both gateways (a client whose gateway is gone goes to the other, as behind a load balancer),
an SSE client per upload that reconnects to the other gateway with Last-Event-ID, and
RPC quotes through both. Faults, one at a time and then mixed: a worker host loses power
while it holds a task; a broker host loses power; a broker host is cut off from the
other two for 30 s; a gateway host loses power; PostgreSQL restarts. Afterwards every
message is counted, as RabbitMQ's Jepsen tests do: lost, duplicated, unexpected; each
SSE client's events must be its task's whole history, each once.

Run: ``.venv/bin/python -m pytest -m multihost tests/cluster/test_multihost.py -s``
(-s prints the table; the short test has one fault, the other all of them).
"""

from __future__ import annotations

import asyncio
import itertools
import shutil
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import httpx_sse
import pytest

from gateway.settings import GatewaySettings
from infra.cluster import BrokerCluster
from infra.netns import Network
from infra.node import BrokerNode
from infra.ports import free_port
from infra.postgres_node import PostgresConfig, PostgresNode
from infra.s3_server import S3Server
from infra.storage import StorageConfig
from workers.access import create_users

from ..conftest import TEST_BUCKET, s3_storage_config
from ..gateway.conftest import ChildProcess, GatewayProcess, bearer, jpeg_bytes, settings_env
from ..gateway.test_streams import status_events
from ..helpers import eventually
from .conftest import BOOT_TIMEOUT_S
from .test_failover import MAX_ORDERS, NO_CAPS, rows

pytestmark = [pytest.mark.multihost, pytest.mark.timeout(BOOT_TIMEOUT_S + 900)]

BROKERS = ("b1", "b2", "b3")
HOSTS = (*BROKERS, "pg", "s3", "gw1", "gw2", "w1", "w2", "rpc")
TERMINAL = ("succeeded", "failed", "dead", "cancelled")
# Seconds between AMQP heartbeats: a host that lost power is noticed after two missed ones.
HEARTBEAT_S = 5
PARTITION_S = 30
GATEWAY_PORT = 8000  # each gateway host has its own ports


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
    """Three nodes, each on its own host."""
    ports = [(free_port(), free_port(), None) for _ in BROKERS]
    # An epmd port no root-namespace epmd has: each host starts its own.
    configs = BrokerCluster.configs(
        tmp_path_factory.mktemp("multihost-cluster"),
        ports,
        epmd_port=free_port(),
        hosts=[network[name] for name in BROKERS],
    )
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
    host = network["s3"]
    server = S3Server(
        tmp_path_factory.mktemp("multihost-s3"), host=host.address, command_prefix=host.prefix
    )
    try:
        server.start()
        server.create_bucket(TEST_BUCKET)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def pg(network: Network) -> Iterator[PostgresNode]:
    # Not under pytest's temp dir: closed to the postgres user (see tests/conftest.py).
    base_dir = Path(tempfile.mkdtemp(prefix="taskgate-multihost-pg-"))
    host = network["pg"]
    config = PostgresConfig(
        base_dir, free_port(), listen_address=host.address, command_prefix=host.prefix
    )
    node = PostgresNode(config)
    try:
        node.start()
        yield node
    finally:
        node.stop()
        shutil.rmtree(base_dir, ignore_errors=True)


@pytest.fixture
def storage_config(s3: S3Server, tmp_path: Path) -> StorageConfig:
    """Uploads and outputs in S3 (the gateway fixtures then use it)."""
    return s3_storage_config(s3, tmp_path / "storage")


@pytest.fixture
def gateway_settings(
    gateway_settings: GatewaySettings, pg: PostgresNode, kind_prefix: str
) -> Iterator[GatewaySettings]:
    """The gateway fixtures' settings on a PostgreSQL database of the test's own.

    Uploads are ``waiting`` tasks: each holds its worker until the test opens its gate, so
    the test knows a task is mid-way when it pulls the plug.
    """
    name = f"test_{uuid.uuid4().hex[:12]}"
    url = pg.create_database(name)
    yield replace(gateway_settings, database_url=url, upload_kind=f"{kind_prefix}.waiting")
    pg.drop_database(name)


@dataclass
class Deployment:
    """What runs where; ``live`` is what a load balancer would send requests to."""

    network: Network
    settings: GatewaySettings
    start_worker: Callable[..., ChildProcess]
    gateways: dict[str, GatewayProcess] = field(default_factory=dict)
    live: list[GatewayProcess] = field(default_factory=list)
    started: list[GatewayProcess] = field(default_factory=list)  # every one, to reap

    async def start_gateway(self, name: str, log_dir: Path) -> None:
        log = log_dir / f"{name}-{len(self.gateways)}.log"
        self.gateways[name] = GatewayProcess(
            self.settings, GATEWAY_PORT, log, NO_CAPS, host=self.network[name]
        )
        self.started.append(self.gateways[name])
        await self.gateways[name].wait_ready()
        self.live.append(self.gateways[name])

    def start_worker_on(self, name: str) -> None:
        self.start_worker(orders=True, host=self.network[name])


@pytest.fixture
async def deployment(
    network: Network,
    gateway_settings: GatewaySettings,
    tmp_path: Path,
    worker_process: Callable[..., ChildProcess],
    role_urls: dict[str, str],
) -> AsyncIterator[Deployment]:
    """Both gateways, the rpc server and the first worker (on w1), each on its own host."""
    rpc = ChildProcess(
        network["rpc"].argv([sys.executable, "-m", "rpc", "workers.services:server"]),
        {**settings_env(gateway_settings), "AMQP_URL": role_urls["rpc"]},
        tmp_path / "rpc.log",
    )
    deployment = Deployment(network, gateway_settings, worker_process)
    try:
        for name in ("gw1", "gw2"):
            await deployment.start_gateway(name, tmp_path)
        deployment.start_worker_on("w1")
        yield deployment
    finally:
        for process in (rpc, *deployment.started):
            process.kill()


@dataclass
class Tally:
    """What the load did and saw."""

    uploads: set[str] = field(default_factory=set)
    orders: set[str] = field(default_factory=set)
    answers: Counter[str] = field(default_factory=Counter)
    streams: dict[str, list[tuple[int, str]]] = field(default_factory=dict)
    rpc: Counter[str] = field(default_factory=Counter)
    rpc_failures: list[tuple[float, float]] = field(default_factory=list)  # (when, took s)
    rpc_last: str = ""
    faults: list[tuple[str, str]] = field(default_factory=list)

    @property
    def accepted(self) -> int:
        return len(self.uploads) + len(self.orders)


async def follow(
    live: list[GatewayProcess], token: dict[str, str], url: str
) -> list[tuple[int, str]]:
    """A task's events as an SSE client sees them: the first on one gateway, then on to the
    end from the next with Last-Event-ID (and so on, round the live gateways, after any break)."""
    seen: list[tuple[int, str]] = []
    for n in itertools.count():
        gateway = live[n % len(live)]
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


class Load:
    """Clients sending uploads and orders, following each upload's stream, asking for quotes."""

    def __init__(self, deployment: Deployment) -> None:
        self.deployment = deployment
        self.settings = deployment.settings
        self.token = bearer(deployment.settings)
        self.image = jpeg_bytes(64, 48)
        self.tally = Tally()
        self.numbers = itertools.count()
        self.followers: list[asyncio.Task[None]] = []
        self.done = asyncio.Event()
        self.closed_gates: set[str] = set()

    def open_gate(self, task_id: str) -> None:
        gate = self.settings.storage_dir / task_id / "gate-1"
        gate.parent.mkdir(parents=True, exist_ok=True)
        gate.touch()

    async def send(self, what: str, n: int) -> str:
        """Until accepted (same idempotency key on every retry, on any gateway); the new id."""
        key = {**self.token, "Idempotency-Key": f"{what}-{n}"}
        for attempt in itertools.count(n):
            live = self.deployment.live
            gateway = live[attempt % len(live)]
            try:
                async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
                    if what == "order":
                        order = {
                            "email": f"c{n}@example.com",
                            "lines": [{"sku": "MUG-01", "quantity": 1}],
                        }
                        response = await http.post("/orders", json=order, headers=key)
                    else:
                        files = {"file": ("a.jpg", self.image)}
                        response = await http.post("/uploads", files=files, headers=key)
            except httpx.TransportError:
                self.tally.answers["transport error"] += 1
                await asyncio.sleep(0.2)
                continue
            self.tally.answers[str(response.status_code)] += 1
            if response.status_code in (201, 202):
                body = response.json()
                return str(body["order_id"] if what == "order" else body["task_id"])
            assert response.status_code in (503, 504), response.text
            await asyncio.sleep(0.2)
        raise AssertionError("unreachable")

    async def upload(self, n: int | None = None, *, gate_open: bool = True) -> str:
        task_id = await self.send("upload", next(self.numbers) if n is None else n)
        self.tally.uploads.add(task_id)
        if gate_open:
            self.open_gate(task_id)
        url = f"/tasks/{task_id}/events"

        async def track() -> None:
            self.tally.streams[task_id] = await follow(self.deployment.live, self.token, url)

        self.followers.append(asyncio.create_task(track()))
        return task_id

    async def client(self) -> None:
        while not self.done.is_set():
            n = next(self.numbers)
            if n % 2 and len(self.tally.orders) < MAX_ORDERS:
                self.tally.orders.add(await self.send("order", n))
            else:
                await self.upload(n)
            await asyncio.sleep(0.5)

    async def rpc_probe(self) -> None:
        """Quotes through the live gateways: each answers or fails fast, never hangs."""
        tally = self.tally
        async with httpx.AsyncClient(timeout=30, headers=self.token) as http:
            for n in itertools.count():
                if self.done.is_set():
                    return
                live = self.deployment.live
                started = time.monotonic()
                try:
                    response = await http.post(
                        f"{live[n % len(live)].url}/rpc/orders.quote",
                        json={"lines": [{"sku": "MUG-01", "quantity": 1}]},
                    )
                    outcome = str(response.status_code)
                except httpx.TransportError as exc:
                    outcome = type(exc).__name__
                tally.rpc[outcome] += 1
                tally.rpc_last = outcome
                if outcome != "200":
                    failed_s = time.monotonic() - started
                    tally.rpc_failures.append((started, failed_s))
                await asyncio.sleep(0.5)

    def record(self, what: str, figure: str, since: float) -> None:
        """A fault's row, with the RPC calls that failed from ``since`` until now."""
        failed = [took_s for at, took_s in self.tally.rpc_failures if at >= since]
        slowest = f", the slowest after {max(failed):.1f} s" if failed else ""
        self.tally.faults.append((what, f"{figure}; {len(failed)} quotes failed{slowest}"))

    async def accepted_after(self, count: int) -> None:
        """Until ``count`` more uploads and orders were accepted than now."""
        target = self.tally.accepted + count

        async def enough() -> bool:
            return self.tally.accepted >= target

        await eventually(enough, timeout_s=300)

    async def running(self, task_id: str) -> int:
        sql = f"SELECT count(*) FROM events WHERE task_id = '{task_id}' AND state = 'running'"
        return int((await rows(self.settings, sql))[0][0])  # type: ignore[call-overload]

    async def run(self, faults: Callable[[], Awaitable[None]]) -> None:
        """Load while ``faults`` runs, and a little after; then wait for every stream."""
        clients = [asyncio.create_task(self.client()) for _ in range(3)]
        clients.append(asyncio.create_task(self.rpc_probe()))
        try:
            await self.accepted_after(6)
            await faults()
            await self.accepted_after(6)
        finally:
            self.done.set()
            await asyncio.gather(*clients, return_exceptions=True)
        await asyncio.wait_for(asyncio.gather(*self.followers), timeout=300)


async def worker_host_loses_power_mid_task(load: Load, held: str) -> None:
    """w1 holds ``held`` (gate closed) when it loses power; the task must end on w2."""
    network = load.deployment.network
    cut_at = time.monotonic()
    killed = await asyncio.to_thread(network["w1"].power_off)
    load.open_gate(held)

    async def held_done() -> bool:
        sql = f"SELECT state FROM tasks WHERE task_id = '{held}'"
        return (await rows(load.settings, sql))[0][0] in TERMINAL

    await eventually(held_done, timeout_s=180)
    runs = await load.running(held)
    load.record(
        "worker host w1 loses power mid-task",
        f"{killed} processes; its task ran {runs} times, done on w2"
        f" {time.monotonic() - cut_at:.1f} s later",
        cut_at,
    )
    assert runs == 2  # started on w1, then the whole task again on w2
    await asyncio.to_thread(network["w1"].power_on)
    load.deployment.start_worker_on("w1")


async def first_worker_holds_a_task(load: Load) -> str:
    """A task the worker on w1 holds; then the worker on w2 starts."""
    held = await load.upload(gate_open=False)

    async def running() -> bool:
        return await load.running(held) > 0

    await eventually(running, timeout_s=120)
    load.deployment.start_worker_on("w2")
    return held


async def broker_back(cluster: BrokerCluster, node: BrokerNode) -> float:
    """Start ``node`` again (if it went), wait for the cluster and every quorum queue's
    replicas; the seconds that took."""
    started = time.monotonic()
    await asyncio.to_thread(node.start, BOOT_TIMEOUT_S)
    await asyncio.to_thread(cluster.wait_formed, time.monotonic() + BOOT_TIMEOUT_S)
    await asyncio.to_thread(cluster.wait_quorum_safe, BOOT_TIMEOUT_S)
    return time.monotonic() - started


async def broker_host_loses_power(load: Load, cluster: BrokerCluster, index: int) -> None:
    host = load.deployment.network[BROKERS[index]]
    node = cluster.nodes[index]
    cut_at = time.monotonic()
    await asyncio.to_thread(host.power_off)
    await load.accepted_after(5)
    went_on_s = time.monotonic() - cut_at
    await asyncio.to_thread(node.stop)  # reaps the start script, clears its pid file
    await asyncio.to_thread(host.power_on)
    back_s = await broker_back(cluster, node)
    load.record(
        f"broker host {host.name} loses power",
        f"5 more accepted after {went_on_s:.1f} s; back, replicas online, in {back_s:.1f} s",
        cut_at,
    )


async def broker_host_cut_off(load: Load, cluster: BrokerCluster, index: int) -> None:
    network = load.deployment.network
    host = network[BROKERS[index]]
    peers = [network[name] for name in BROKERS if name != host.name]
    cut_at = time.monotonic()
    await asyncio.to_thread(host.isolate, peers)
    try:
        accepted = load.tally.accepted
        await asyncio.sleep(PARTITION_S)  # the fault's length, not a wait for something
        during = load.tally.accepted - accepted
    finally:
        await asyncio.to_thread(host.heal, peers)
    back_s = await broker_back(cluster, cluster.nodes[index])
    load.record(
        f"broker host {host.name} cut off from the others for {PARTITION_S} s",
        f"{during} accepted meanwhile; whole, replicas online, {back_s:.1f} s after healing",
        cut_at,
    )


async def gateway_host_loses_power(load: Load, name: str, log_dir: Path) -> None:
    deployment = load.deployment
    gateway = deployment.gateways[name]
    deployment.live.remove(gateway)  # the load balancer's health check
    cut_at = time.monotonic()
    await asyncio.to_thread(deployment.network[name].power_off)
    await load.accepted_after(5)
    went_on_s = time.monotonic() - cut_at
    await asyncio.to_thread(deployment.network[name].power_on)
    await deployment.start_gateway(name, log_dir)
    load.record(
        f"gateway host {name} loses power",
        f"5 more accepted through the other after {went_on_s:.1f} s; restarted",
        cut_at,
    )


async def postgres_restarts(load: Load, pg: PostgresNode) -> None:
    started = time.monotonic()
    await asyncio.to_thread(pg.restart)
    restarted_s = time.monotonic() - started
    await load.accepted_after(5)
    load.record(
        "PostgreSQL restarts",
        f"down {restarted_s:.1f} s; 5 more accepted {time.monotonic() - started:.1f} s after",
        started,
    )


async def test_a_worker_host_that_loses_power_mid_task_loses_and_doubles_nothing(
    deployment: Deployment,
):
    load = Load(deployment)
    held = await first_worker_holds_a_task(load)
    started = time.monotonic()
    await load.run(lambda: worker_host_loses_power_mid_task(load, held))
    await report(load, time.monotonic() - started)


async def test_each_fault_then_all_at_once_lose_and_double_nothing(
    deployment: Deployment, hosts_cluster: BrokerCluster, pg: PostgresNode, tmp_path: Path
):
    load = Load(deployment)
    held = await first_worker_holds_a_task(load)

    async def faults() -> None:
        await worker_host_loses_power_mid_task(load, held)
        await broker_host_loses_power(load, hosts_cluster, 0)
        await broker_host_cut_off(load, hosts_cluster, 1)
        await gateway_host_loses_power(load, "gw2", tmp_path)
        await postgres_restarts(load, pg)
        # Mixed: a broker host and a gateway host lose power while PostgreSQL restarts;
        # then another broker host is cut off.
        await asyncio.gather(
            broker_host_loses_power(load, hosts_cluster, 2),
            gateway_host_loses_power(load, "gw1", tmp_path),
            postgres_restarts(load, pg),
        )
        await broker_host_cut_off(load, hosts_cluster, 0)

    started = time.monotonic()
    await load.run(faults)
    await report(load, time.monotonic() - started)


async def report(load: Load, took_s: float) -> None:
    """Count every task, order and stream against the store; print the table; assert."""
    settings, tally = load.settings, load.tally

    async def drained() -> bool:
        return not await rows(settings, "SELECT 1 FROM outbox")

    await eventually(drained, timeout_s=120)
    ids = tally.uploads | tally.orders

    async def all_finished() -> bool:
        states = {
            str(t): str(v) for t, v in await rows(settings, "SELECT task_id, state FROM tasks")
        }
        return all(states.get(i) in TERMINAL for i in ids)

    await eventually(all_finished, timeout_s=180)
    terminal = Counter(
        str(r[0])
        for r in await rows(settings, f"SELECT task_id FROM events WHERE state IN {TERMINAL!r}")
    )
    done: dict[str, Counter[str]] = {}
    for name in ("reservations", "sales", "emails"):
        done[name] = Counter(
            str(r[0]) for r in await rows(settings, f"SELECT order_id FROM {name}")
        )
    history: dict[str, list[tuple[int, str]]] = {}
    for task_id, seq, state in await rows(
        settings, "SELECT task_id, seq, state FROM events ORDER BY seq"
    ):
        history.setdefault(str(task_id), []).append((int(str(seq)), str(state)))

    def counts(expected: set[str], got: Counter[str]) -> tuple[int, int, int, int]:
        return (
            len(expected),
            len(expected - set(got)),
            sum(1 for i in expected if got[i] > 1),
            len(set(got) - expected),
        )

    lines = [("tasks terminal (uploads + orders)", counts(ids, terminal))]
    lines += [(f"orders in {name}", counts(tally.orders, got)) for name, got in done.items()]
    streams_wrong = [t for t, seen in tally.streams.items() if seen != history.get(t)]
    out = [
        f"multihost run: {took_s:.0f} s; HTTP answers {dict(tally.answers)}",
        *(f"  fault: {what}: {figure}" for what, figure in tally.faults),
        f"  rpc quotes {dict(tally.rpc)}; the last {tally.rpc_last}",
        f"  {'what':36} {'accepted':>8} {'lost':>5} {'dup':>5} {'unexp':>5}",
        *(f"  {what:36} {a:8} {lost:5} {dup:5} {unexp:5}" for what, (a, lost, dup, unexp) in lines),
        f"  {'SSE streams = store history':36} {len(tally.streams):8} wrong: {len(streams_wrong)}",
    ]
    out += [f"    {t}: saw {tally.streams[t]}, store {history.get(t)}" for t in streams_wrong[:3]]
    print("\n" + "\n".join(out))

    for what, (_, lost, dup, unexp) in lines:
        assert (lost, dup, unexp) == (0, 0, 0), what
    assert streams_wrong == []
    assert set(tally.streams) == tally.uploads
    # RPC recovered: the last quote was answered.
    assert tally.rpc_last == "200"
