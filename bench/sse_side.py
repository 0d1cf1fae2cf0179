"""One side of bench/sse.py: its server, its streams held, the events it delivered."""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import percentile_ms
from bench.procfs import CpuWindow, cpu_s, nofile_limit, open_fds, rss_kb
from bench.servers import ServerProcess, http_status
from bench.sse_fleet import ClientFleet
from bench.sse_publish import KIND, Publisher, PublishOutcome, publish_at_rate

BENCH_DIR = Path(__file__).resolve().parent
# The baseline closes a channel per stream on shutdown: allow for it.
SERVER_STOP_TIMEOUT_S = 20.0
SERVER_STOP_S_PER_1000_STREAMS = 2.0
# Time for allocations and the first store reads to settle before RSS is read.
SETTLE_S = 1.0
# gateway.settings.GatewaySettings.sse_max_per_user
DEFAULT_SSE_MAX_PER_USER = 16


@dataclass
class ServerSpec:
    """How to start one side's server process."""

    name: str
    argv: list[str]
    env: dict[str, str]
    note: str
    # The task store to fill before the server starts (the gateway's), or None.
    database: Path | None = None


def gateway_spec(url: str, workdir: Path, secret: str, per_user: int) -> ServerSpec:
    env = {
        "AMQP_URL": url,
        "DATABASE_PATH": str(workdir / "taskgate.db"),
        "STORAGE_DIR": str(workdir / "storage"),
        "SECRET_KEY": secret,
    }
    note = (
        "python -m gateway: journal shards + recorder, a live queue on status.recorded, "
        "SQLite store, in-process hub; "
        "each stream a user of its own with a Bearer token, its task owned by that user"
    )
    if per_user > DEFAULT_SSE_MAX_PER_USER:
        # Several streams per task (--tasks < --streams) all come from the task's owner.
        env["SSE_MAX_PER_USER"] = str(per_user)
        note += f"; SSE_MAX_PER_USER={per_user}"
    return ServerSpec(
        name="taskgate",
        argv=[sys.executable, "-m", "gateway"],
        env=env,
        note=note,
        database=Path(env["DATABASE_PATH"]),
    )


def baseline_spec(url: str, per_connection: int) -> ServerSpec:
    return ServerSpec(
        name="baseline",
        argv=[sys.executable, str(BENCH_DIR / "sse_baseline_app.py")],
        env={
            "AMQP_URL": url,
            "BASELINE_STREAMS_PER_CONNECTION": str(per_connection),
        },
        note=(
            "bench/sse_baseline_app.py: per stream one channel + exclusive auto-delete queue "
            f"bound '*.<task_id>.*'; <= {per_connection:,} channels per AMQP connection "
            "(RabbitMQ's channel_max is 2,047); no auth, no store"
        ),
    )


@dataclass
class SideResult:
    name: str
    note: str
    requested: int = 0
    held_after_open: int | None = None
    held_at_end: int | None = None
    open_seconds: float | None = None
    failures: Counter[str] = field(default_factory=Counter)
    rss_ready_kb: int | None = None
    rss_before_kb: int | None = None
    rss_after_kb: int | None = None
    broker_before_kb: int | None = None
    broker_after_kb: int | None = None
    server_fds: int | None = None
    server_fd_limit: int | None = None
    idle_cpu: dict[str, float] = field(default_factory=dict)
    published: PublishOutcome | None = None
    expected: int = 0
    delivered: int = 0
    undecodable: int = 0
    latencies_s: list[float] = field(default_factory=list)
    last_delivery_at: float = 0.0
    busy_cpu: dict[str, float] = field(default_factory=dict)
    # The server's CPU seconds (/proc utime + stime) from the first publish until every
    # delivery was in (or the drain bound): all it spent on these events, backlog included.
    server_cpu_s: float | None = None
    exit_code: int | None = None
    error: str | None = None

    @property
    def at_fd_limit(self) -> bool:
        """Every file the server may open is open: it could not take one more socket."""
        if self.server_fds is None or self.server_fd_limit is None:
            return False
        return self.server_fds >= self.server_fd_limit - 1

    @property
    def kb_per_stream(self) -> float | None:
        return _per_stream(self.rss_before_kb, self.rss_after_kb, self.held_after_open)

    @property
    def broker_kb_per_stream(self) -> float | None:
        return _per_stream(self.broker_before_kb, self.broker_after_kb, self.held_after_open)

    @property
    def deliveries_per_s(self) -> float | None:
        if self.published is None or not self.last_delivery_at:
            return None
        return self.delivered / max(self.last_delivery_at - self.published.started_at, 1e-9)

    def late(self, threshold_s: float) -> int:
        return sum(1 for latency in self.latencies_s if latency > threshold_s)

    def latency_ms(self, q: float) -> float | None:
        return percentile_ms(self.latencies_s, q) if self.latencies_s else None


def _per_stream(before: int | None, after: int | None, streams: int | None) -> float | None:
    if before is None or after is None or not streams:
        return None
    return (after - before) / streams


@dataclass
class Bench:
    """What every side shares: arguments, broker, publisher, the streams' tasks."""

    args: argparse.Namespace
    url: str
    broker_pid: int | None
    publisher: Publisher
    workdir: Path
    task_ids: list[str]
    # The gateway's SECRET_KEY, and a Bearer token for the owner of each task (a user per task).
    secret: str
    tokens: list[str]
    sources_per_side: int

    def streams(self) -> tuple[list[str], list[str]]:
        """(task ids, tokens) of the streams: stream i watches task i % tasks."""
        picks = [i % len(self.task_ids) for i in range(self.args.streams)]
        return [self.task_ids[k] for k in picks], [self.tokens[k] for k in picks]

    @property
    def streams_per_task(self) -> int:
        return math.ceil(self.args.streams / len(self.task_ids))

    def sources(self, side_index: int) -> list[str]:
        # A fresh set of source addresses per side: the previous side's TIME_WAIT ports stay out
        # of the way (a new server port would do too; both are cheap).
        first = 1 + side_index * self.sources_per_side
        return [f"127.0.0.{first + k}" for k in range(self.sources_per_side)]


async def measure_side(bench: Bench, spec: ServerSpec, side_index: int) -> SideResult:
    result = SideResult(spec.name, spec.note, requested=bench.args.streams)
    server = None
    try:
        if spec.database is not None:
            await seed_store(bench, spec.database)
        server = ServerProcess(spec.name, spec.argv, spec.env, bench.workdir / f"{spec.name}.log")
        await server.wait_ready()
        result.rss_ready_kb = rss_kb(server.pid)
        if spec.database is not None:
            await check_task_visible(bench, server)
        await asyncio.sleep(SETTLE_S)
        result.rss_before_kb = rss_kb(server.pid)
        result.broker_before_kb = rss_kb(bench.broker_pid)
        warn_if_fds_short(server.pid, bench.args.streams)
        fleet = await ClientFleet.spawn(bench.args.client_procs)
        try:
            await hold_streams(bench, server, fleet, result, side_index)
            if not bench.args.hold_only and result.held_after_open:
                await publish_and_collect(bench, server, fleet, result)
        finally:
            await fleet.close()
    except Exception as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        if server is not None:
            stop_s = (
                SERVER_STOP_TIMEOUT_S + SERVER_STOP_S_PER_1000_STREAMS * bench.args.streams / 1000
            )
            result.exit_code = await asyncio.to_thread(server.stop, stop_s)
    return result


async def seed_store(bench: Bench, database: Path) -> None:
    """Each task ``queued`` and owned by its user, recorded with the gateway's own store.

    The gateway streams only tasks the caller owns, and only the gateway sets an owner
    (an upload records its task with the uploader as owner); so the tasks are recorded
    the same way before the gateway starts. Its status feed records the events after.
    """
    from gateway.task_store import DatabaseTaskStore
    from infra.database import open_database
    from workers.messages import encoder, new_event

    db = await open_database(database)
    store = await DatabaseTaskStore.open(db)
    try:
        async with asyncio.timeout(bench.args.setup_timeout):
            for k, task_id in enumerate(bench.task_ids):
                event = new_event(KIND, task_id, "queued", 1)
                await store.record([(event, encoder.encode(event))], owner=owner_of(k))
    finally:
        await db.close()


async def check_task_visible(bench: Bench, server: ServerProcess) -> None:
    """One task answers 200 to its owner's token: the clients' requests are right."""
    status = await http_status(
        server.port, f"/tasks/{bench.task_ids[-1]}", {"Authorization": f"Bearer {bench.tokens[-1]}"}
    )
    if status != 200:
        raise RuntimeError(f"GET /tasks/<id> with the owner's token answered {status}")


def owner_of(task_index: int) -> str:
    return f"bench-user-{task_index:06d}"


def warn_if_fds_short(pid: int, streams: int) -> None:
    limit = nofile_limit(pid)
    if limit is None:
        return
    room = limit - open_fds(pid)
    if streams > room:
        print(
            f"  note: the server may open {limit:,} files and has {open_fds(pid)} open, so it "
            f"can hold at most {room:,} of the {streams:,} streams (one socket each)",
            flush=True,
        )


async def hold_streams(
    bench: Bench, server: ServerProcess, fleet: ClientFleet, result: SideResult, side_index: int
) -> None:
    """Open the streams, let them idle, then read memory and count what is still held."""
    print(f"  {server.name}: opening {bench.args.streams:,} streams ...", flush=True)
    opened = await fleet.open(server.port, bench.streams(), bench.sources(side_index), bench.args)
    result.open_seconds = opened.seconds
    result.failures = opened.failures
    print(
        f"  {server.name}: {opened.ready:,} ready in {opened.seconds:.1f} s"
        + (f" (failed: {dict(opened.failures)})" if opened.failures else "")
        + f"; idle for {bench.args.idle_seconds:g} s",
        flush=True,
    )
    meter = CpuWindow({"server": [server.pid]}, own_name="publisher")
    meter.begin()
    await asyncio.sleep(bench.args.idle_seconds)
    meter.end()
    result.idle_cpu = cpu_shares(meter)
    result.rss_after_kb = rss_kb(server.pid)
    result.broker_after_kb = rss_kb(bench.broker_pid)
    result.server_fds = open_fds(server.pid)
    result.server_fd_limit = nofile_limit(server.pid)
    result.held_after_open = len(await fleet.held_indices())
    print(f"  {server.name}: {result.held_after_open:,} still held", flush=True)


async def publish_and_collect(
    bench: Bench, server: ServerProcess, fleet: ClientFleet, result: SideResult
) -> None:
    """Publish at the rate, wait for the deliveries to drain, then gather the latencies."""
    args = bench.args
    held = Counter(bench.task_ids[i % len(bench.task_ids)] for i in await fleet.held_indices())
    pids = {"server": [server.pid], "clients": fleet.pids}
    if bench.broker_pid is not None:
        pids["broker"] = [bench.broker_pid]
    meter = CpuWindow(pids, own_name="publisher")
    meter.begin()
    server_cpu_start = cpu_s(server.pid)
    print(
        f"  {server.name}: publishing {args.rate:g} events/s for {args.seconds:g} s",
        flush=True,
    )
    rng = random.Random(args.seed)
    result.published = await publish_at_rate(
        bench.publisher, bench.task_ids, args.rate, args.seconds, rng
    )
    meter.end()
    result.busy_cpu = cpu_shares(meter)
    result.expected = sum(n * held[task] for task, n in result.published.per_task.items())
    deadline = time.monotonic() + args.drain_seconds
    while time.monotonic() < deadline:
        if await fleet.delivered() >= result.expected:
            break
        await asyncio.sleep(0.25)
    result.server_cpu_s = cpu_s(server.pid) - server_cpu_start
    for stats in await fleet.stats():
        result.delivered += stats["delivered"]
        result.undecodable += stats["undecodable"]
        result.latencies_s.extend(stats["latencies_s"])
        result.last_delivery_at = max(result.last_delivery_at, stats["last_at"])
    result.held_at_end = len(await fleet.held_indices())


def cpu_shares(meter: CpuWindow) -> dict[str, float]:
    """% of a core per process, and the machine's: all its cores, and the other processes."""
    shares = meter.percent_of_core()
    shares["machine"] = 100 * meter.machine_cores / (os.cpu_count() or 1)
    # Whatever else ran on the machine meanwhile: it competed for the same cores.
    shares["others"] = 100 * meter.others_cores
    return shares
