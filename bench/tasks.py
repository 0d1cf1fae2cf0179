"""Benchmark: no-op tasks/s, submitted and awaited to their result: taskgate vs its peers.

Every side gets the same burst on the same broker: N tasks submitted as fast as
its client allows, then every result awaited. taskgate goes through
``TaskSubmitter`` (publisher confirms, a ``queued`` event, ``running`` +
``succeeded`` events confirmed before the ack). The peers: Celery (its amqp
broker, the ``rpc://`` backend, prefork with one child per core), and taskiq and
FastStream, each as its docs show it and again configured for taskgate's
durability (bench/task_peers.py says how). All stay up for the whole run and take
turns, round after round; the figures are medians of the rounds. Run it in the
project's venv with the ``bench`` extra (``pip install -e '.[bench]'``) and Debian's
``redis-server`` (taskiq's default result backend):

    python bench/tasks.py                      # starts a private broker, Redis, PostgreSQL
    AMQP_URL=amqp://... python bench/tasks.py  # uses that broker (DATABASE_URL: that database)
    python bench/tasks.py --tasks 5000
    python bench/tasks.py --no-peers           # taskgate and Celery only
    python bench/tasks.py --tiny               # seconds: checks that it works
    python bench/tasks.py --cluster            # and taskgate on a 3-node cluster, beside

``--cluster`` then runs taskgate alone (same bursts, one worker process) on a
private 3-node cluster (or AMQP_CLUSTER_URL's), where every task queue and
journal shard is a quorum queue replicated on the three nodes, and reports it
beside the single node: what replication costs a task.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import logging
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(REPO))

from bench.common import (  # noqa: E402
    broker,
    check_measured,
    cluster,
    parse_args,
    rotate,
    stop_process,
)
from bench.servers import die_with_parent  # noqa: E402
from bench.task_peers import PeerServers  # noqa: E402
from rpc.connection import connect_wire  # noqa: E402
from rpc.wire import WireConnection  # noqa: E402
from workers import TaskContext, TaskRegistry, TaskSubmitter  # noqa: E402
from workers.topology import DEFAULT_STATUS_SHARDS, TERMINAL_BINDING_KEYS, status_journal  # noqa: E402

NOOP = "bench.noop"
CELERY_URL_ENV = "BENCH_CELERY_BROKER"

registry = TaskRegistry()


@registry.task(NOOP)
async def noop(ctx: TaskContext, payload: int) -> int:
    return payload


def make_celery(url: str):  # type: ignore[no-untyped-def]
    """The Celery app of the baseline, with a no-op task of the same name."""
    from celery import Celery

    app = Celery("bench", broker=url, backend="rpc://")
    app.conf.update(worker_hijack_root_logger=False, task_serializer="json")

    @app.task(name=NOOP)
    def celery_noop(n: int) -> int:
        return n

    return app


# Imported by the Celery worker as ``-A tasks:celery_app`` (cwd = bench/).
celery_app = make_celery(os.environ[CELERY_URL_ENV]) if CELERY_URL_ENV in os.environ else None


class Taskgate:
    """Bursts of no-op tasks through ``TaskSubmitter``, each awaited to its outcome."""

    def __init__(self, connection: WireConnection, submitter: TaskSubmitter) -> None:
        self.connection = connection
        self.submitter = submitter
        # Confirmed publishes are the client's cost; bound them like a busy gateway would.
        self.gate = asyncio.Semaphore(256)

    @classmethod
    async def create(cls, url: str) -> Taskgate:
        connection = await connect_wire(url, name="bench-submitter")
        submitter = await TaskSubmitter.create(connection, binding_keys=TERMINAL_BINDING_KEYS)
        return cls(connection, submitter)

    async def burst(self, n: int) -> float:
        """Tasks/s for ``n`` no-op tasks submitted at once."""

        async def one(i: int) -> None:
            async with self.gate:
                task_id = await self.submitter.submit(NOOP, i)
            outcome = await self.submitter.wait(task_id, timeout_s=120)
            assert outcome.state == "succeeded" and outcome.result == i, outcome
            self.submitter.forget(task_id)

        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        rate = n / (time.perf_counter() - started)
        # A gateway would be draining the journal; without one, empty it between rounds so
        # each round starts as the first did, not behind the backlog of the ones before.
        raw = await self.connection.raw_channel()
        for shard in range(DEFAULT_STATUS_SHARDS):
            await raw.queue_purge(status_journal(shard))
        await raw.close()
        return rate

    async def close(self) -> None:
        await self.submitter.close()
        await self.connection.close()


def celery_burst(task, n: int) -> float:  # type: ignore[no-untyped-def]
    """Tasks/s for ``n`` no-op tasks through Celery: all sent, then every result awaited."""
    started = time.perf_counter()
    results = [task.delay(i) for i in range(n)]
    for i, result in enumerate(results):
        assert result.get(timeout=120) == i
    return n / (time.perf_counter() - started)


async def compare(
    url: str, peers: PeerServers | None, n: int, warmup: int, rounds: int
) -> dict[str, list[float]]:
    """Each side's tasks/s per round; the sides take turns, each warm."""
    taskgate = await Taskgate.create(url)
    celery_task = make_celery(url).tasks[NOOP]
    loop = asyncio.get_running_loop()

    async def celery(n: int) -> float:
        return await loop.run_in_executor(None, celery_burst, celery_task, n)

    bursts: dict[str, Callable[[int], Awaitable[float]]] = {
        "taskgate": taskgate.burst,
        "celery": celery,
    }
    clients = await peers.clients() if peers else {}
    bursts.update({name: client.burst for name, client in clients.items()})
    try:
        for burst in bursts.values():
            await burst(warmup)
        return await rotate(
            rounds, {name: functools.partial(burst, n) for name, burst in bursts.items()}, "tasks/s"
        )
    finally:
        await taskgate.close()
        for client in clients.values():
            await client.close()


async def taskgate_rounds(url: str, n: int, warmup: int, rounds: int) -> list[float]:
    """taskgate's tasks/s per round on its own (the cluster run has no peers)."""
    taskgate = await Taskgate.create(url)
    try:
        await taskgate.burst(warmup)
        rates = []
        for i in range(rounds):
            rates.append(await taskgate.burst(n))
            print(f"round {i + 1}: taskgate on the cluster {rates[-1]:>9,.1f} tasks/s", flush=True)
        return rates
    finally:
        await taskgate.close()


def on_cluster(n: int, warmup: int, rounds: int) -> list[float]:
    """taskgate's tasks/s per round, one worker process, on a 3-node cluster."""
    import tempfile

    import uvloop

    with cluster("bench-tasks-cluster-") as (url, _), tempfile.TemporaryDirectory() as tmp:
        worker = start_taskgate_worker(url, Path(tmp) / "storage")
        try:
            return uvloop.run(taskgate_rounds(url, n, warmup, rounds))
        finally:
            stop_process(worker)


def start_taskgate_worker(url: str, storage: Path) -> subprocess.Popen[bytes]:
    # Not ``-m workers --tasks``: bench/ on sys.path would shadow the rpc package with bench/rpc.py.
    env = {
        **os.environ,
        "AMQP_URL": url,
        "STORAGE_DIR": str(storage),
        "DATABASE_PATH": os.environ.get("DATABASE_PATH", str(storage.parent / "taskgate.db")),
        "WORKER_PREFETCH": "256",
        "WORKER_CONCURRENCY": "128",
    }
    return subprocess.Popen(
        [sys.executable, __file__, "--serve"], env=env, preexec_fn=die_with_parent
    )


def serve_taskgate() -> None:
    """The taskgate worker process: ``python -m workers`` with this module's registry."""
    import uvloop

    from workers.__main__ import serve
    from workers.settings import WorkerSettings

    logging.basicConfig(level=logging.WARNING)
    uvloop.run(serve(registry, WorkerSettings.from_env(), orders=False))


def start_celery_worker(url: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, CELERY_URL_ENV: url}
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "tasks:celery_app", "worker", "-l", "warning"],
        cwd=BENCH_DIR,
        env=env,
        preexec_fn=die_with_parent,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=3000, help="tasks per measured burst")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--no-peers", action="store_true", help="taskgate and Celery only (no taskiq, FastStream)"
    )
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="also run taskgate on a 3-node cluster (quorum queues) and report it beside",
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parse_args(parser, tiny={"tasks": 50, "warmup": 10, "rounds": 1})
    if args.serve:
        serve_taskgate()
        return 0
    try:
        import celery  # noqa: F401
    except ImportError:
        print("Celery is not installed in this Python; run with one that has it", file=sys.stderr)
        return 2
    import uvloop

    with contextlib.ExitStack() as stack:
        url, _, tmp = stack.enter_context(broker("bench-tasks-"))
        peers = None if args.no_peers else stack.enter_context(PeerServers.started(url, tmp))
        workers = [start_taskgate_worker(url, tmp / "storage"), start_celery_worker(url)]
        workers += peers.start_workers() if peers else []
        try:
            rates = uvloop.run(compare(url, peers, args.tasks, args.warmup, args.rounds))
        finally:
            for worker in workers:
                stop_process(worker)
    on_three = on_cluster(args.tasks, args.warmup, args.rounds) if args.cluster else None
    print_table(rates, args.tasks)
    measured = {f"{name}.tasks_per_s": statistics.median(rate) for name, rate in rates.items()}
    if on_three is not None:
        single = statistics.median(rates["taskgate"])
        median = statistics.median(on_three)
        print(
            f"taskgate on a 3-node cluster (quorum queues, a replica on each node): "
            f"{median:,.0f} tasks/s, {median / single:.2f}x the single node "
            f"(rounds {min(on_three):,.0f}-{max(on_three):,.0f})"
        )
        measured["cluster.taskgate.tasks_per_s"] = median
    return check_measured(measured)


SETUPS = {
    "taskgate": "1 worker process; persistent events, confirms, ack after the outcome",
    "celery": f"prefork x{os.cpu_count()}, amqp broker, rpc:// backend (its defaults)",
    "taskiq": "taskiq-aio-pika + Redis results, 2 worker processes (its defaults)",
    "taskiq-durable": "taskiq-aio-pika + PostgreSQL results (fsync on)",
    "faststream": "reply_to its reply queue, classic queue, transient (its defaults)",
    "faststream-durable": "reply_to, quorum queue, persist=True, ack after",
}


def print_table(rates: dict[str, list[float]], n: int) -> None:
    """Each side's median tasks/s and taskgate's ratio to it, with the range over rounds."""
    ours = rates["taskgate"]
    print(f"\n{'side':<19} {'tasks/s':>9}  {'taskgate/side':>17}  setup")
    for name, rate in rates.items():
        ratios = [o / r if r else math.inf for o, r in zip(ours, rate, strict=True)]
        versus = (
            ""
            if name == "taskgate"
            else (f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})")
        )
        print(f"{name:<19} {statistics.median(rate):>9,.0f}  {versus:>17}  {SETUPS[name]}")
    print(
        f"\nmedian of {len(ours)} rounds of {n} no-op tasks, each submitted and awaited to its "
        f"result; {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at the end"
    )


if __name__ == "__main__":
    sys.exit(main())
