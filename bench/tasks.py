"""Benchmark: no-op tasks/s, submitted and awaited to their terminal status, taskgate vs Celery.

Both sides run one worker process on the same broker in the same run and get
the same burst: N tasks submitted as fast as the client allows, then every
outcome awaited. taskgate goes through ``TaskSubmitter`` (publisher confirms, a
``queued`` event, ``running`` + ``succeeded`` events confirmed before the ack);
Celery uses its amqp broker and the ``rpc://`` result backend with its default
prefork pool (one child per core). Run it with a Python that has Celery
(the project's ``bench`` extra), e.g. the system python3:

    python bench/tasks.py                      # starts a private broker
    AMQP_URL=amqp://... python bench/tasks.py  # uses that broker
    python bench/tasks.py --tasks 5000
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(REPO))

from rpc.connection import connect_wire  # noqa: E402
from rpc.node import BrokerNode, NodeConfig  # noqa: E402
from workers import TaskContext, TaskRegistry, TaskSubmitter  # noqa: E402
from workers.topology import TERMINAL_BINDING_KEYS  # noqa: E402

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


async def bench_taskgate(url: str, n: int, warmup: int) -> float:
    """Tasks/s for a burst of ``n`` no-op tasks through taskgate."""
    connection = await connect_wire(url, name="bench-submitter")
    submitter = await TaskSubmitter.create(connection, binding_keys=TERMINAL_BINDING_KEYS)
    # Confirmed publishes are the client's cost; bound them like a busy gateway would.
    gate = asyncio.Semaphore(256)

    async def one(i: int) -> None:
        async with gate:
            task_id = await submitter.submit(NOOP, i)
        outcome = await submitter.wait(task_id, timeout_s=120)
        assert outcome.state == "succeeded" and outcome.result == i, outcome
        submitter.forget(task_id)

    try:
        await asyncio.gather(*(one(i) for i in range(warmup)))
        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        return n / (time.perf_counter() - started)
    finally:
        await submitter.close()
        await connection.close()


def bench_celery(url: str, n: int, warmup: int) -> float:
    """Tasks/s for a burst of ``n`` no-op tasks through Celery."""
    app = make_celery(url)
    task = app.tasks[NOOP]

    def burst(count: int) -> None:
        results = [task.delay(i) for i in range(count)]
        for i, result in enumerate(results):
            assert result.get(timeout=120) == i

    burst(warmup)
    started = time.perf_counter()
    burst(n)
    return n / (time.perf_counter() - started)


def start_taskgate_worker(url: str, storage: Path) -> subprocess.Popen[bytes]:
    # Not ``-m workers --tasks``: bench/ on sys.path would shadow the rpc package with bench/rpc.py.
    env = {
        **os.environ,
        "AMQP_URL": url,
        "STORAGE_DIR": str(storage),
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


def stop(child: subprocess.Popen[bytes]) -> None:
    child.send_signal(signal.SIGTERM)
    try:
        child.wait(30)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=3000, help="tasks per measured burst")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve_taskgate()
        return 0
    try:
        import celery  # noqa: F401
    except ImportError:
        print("Celery is not installed in this Python; run with one that has it", file=sys.stderr)
        return 2
    import uvloop

    node = None
    url = os.environ.get("AMQP_URL")
    with tempfile.TemporaryDirectory(prefix="bench-tasks-") as tmp:
        if url is None:
            node = BrokerNode(NodeConfig.on_free_ports(Path(tmp) / "broker"))
            node.start()
            url = node.amqp_url
        try:
            worker = start_taskgate_worker(url, Path(tmp) / "storage")
            try:
                ours = uvloop.run(bench_taskgate(url, args.tasks, args.warmup))
            finally:
                stop(worker)
            print(f"taskgate  {ours:>9,.0f} tasks/s  ({args.tasks} no-op tasks, 1 worker process)")
            worker = start_celery_worker(url)
            try:
                base = bench_celery(url, args.tasks, args.warmup)
            finally:
                stop(worker)
            print(
                f"celery    {base:>9,.0f} tasks/s  "
                f"({args.tasks} no-op tasks, prefork x{os.cpu_count()}, rpc:// backend)"
            )
        finally:
            if node is not None:
                node.stop()
    print(f"\n{os.cpu_count()} cores; ratio taskgate/celery: {ours / base:.2f}x  (target >= 3x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
