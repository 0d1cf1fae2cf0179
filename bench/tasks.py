"""Benchmark: no-op tasks/s, submitted and awaited to their terminal status, taskgate vs Celery.

Both sides run one worker process on the same broker and get the same burst:
N tasks submitted as fast as the client allows, then every outcome awaited.
taskgate goes through ``TaskSubmitter`` (publisher confirms, a ``queued``
event, ``running`` + ``succeeded`` events confirmed before the ack); Celery
uses its amqp broker and the ``rpc://`` result backend with its default prefork
pool (one child per core). Both stay up for the whole run and take turns, round
after round; the figure is the median ratio of the rounds. Run it in the
project's venv with the ``bench`` extra (``pip install -e '.[bench]'``):

    python bench/tasks.py                      # starts a private broker
    AMQP_URL=amqp://... python bench/tasks.py  # uses that broker
    python bench/tasks.py --tasks 5000
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
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(REPO))

from bench.common import (  # noqa: E402
    Medians,
    alternate,
    broker,
    check_measured,
    cluster,
    parse_args,
    stop_process,
)
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


async def compare(url: str, n: int, warmup: int, rounds: int) -> list[tuple[float, float]]:
    """(celery, taskgate) tasks/s per round; the two sides alternate, each warm."""
    taskgate = await Taskgate.create(url)
    celery_task = make_celery(url).tasks[NOOP]
    loop = asyncio.get_running_loop()

    async def celery(n: int) -> float:
        return await loop.run_in_executor(None, celery_burst, celery_task, n)

    try:
        await taskgate.burst(warmup)
        await celery(warmup)
        return await alternate(
            rounds,
            lambda: celery(n),
            lambda: taskgate.burst(n),
            ("celery", "taskgate"),
            "tasks/s",
        )
    finally:
        await taskgate.close()


async def taskgate_rounds(url: str, n: int, warmup: int, rounds: int) -> list[float]:
    """taskgate's tasks/s per round on its own (the cluster run has no baseline)."""
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


def on_cluster(n: int, warmup: int, rounds: int) -> float:
    """Median tasks/s of taskgate with one worker process on a 3-node cluster."""
    import statistics
    import tempfile

    import uvloop

    with cluster("bench-tasks-cluster-") as (url, _), tempfile.TemporaryDirectory() as tmp:
        worker = start_taskgate_worker(url, Path(tmp) / "storage")
        try:
            return statistics.median(uvloop.run(taskgate_rounds(url, n, warmup, rounds)))
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
    return subprocess.Popen([sys.executable, __file__, "--serve"], env=env)


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

    with broker("bench-tasks-") as (url, _, tmp):
        workers = [start_taskgate_worker(url, tmp / "storage"), start_celery_worker(url)]
        try:
            results = uvloop.run(compare(url, args.tasks, args.warmup, args.rounds))
        finally:
            for worker in workers:
                stop_process(worker)
    m = Medians.of(results)
    measured = {"celery.tasks_per_s": m.base, "taskgate.tasks_per_s": m.ours}
    on_three = on_cluster(args.tasks, args.warmup, args.rounds) if args.cluster else None
    print(
        f"\ntaskgate  {m.ours:>9,.0f} tasks/s  (median of {args.rounds} rounds of {args.tasks} "
        f"no-op tasks, 1 worker process)\n"
        f"celery    {m.base:>9,.0f} tasks/s  (prefork x{os.cpu_count()}, rpc:// backend)\n\n"
        f"{os.cpu_count()} cores; ratio taskgate/celery: median {m.ratio:.2f}x, "
        f"range {m.low:.2f}-{m.high:.2f}x  (target >= 3x)"
    )
    if on_three is not None:
        print(
            f"taskgate  {on_three:>9,.0f} tasks/s  on a 3-node cluster (quorum queues, a replica"
            f" on each node): {on_three / m.ours:.2f}x the single node"
        )
        measured["cluster.taskgate.tasks_per_s"] = on_three
    return check_measured(measured)


if __name__ == "__main__":
    sys.exit(main())
