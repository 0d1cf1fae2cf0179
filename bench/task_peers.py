"""The async-native peers of bench/tasks.py: taskiq and FastStream, each run twice.

``default``: as its docs show it. ``durable``: configured for what taskgate gives
(a persistent message in a durable quorum queue, publisher confirms, the ack after
the work, a result that survives a restart).

- **taskiq** (taskiq-aio-pika): its broker already publishes persistent messages with
  confirms into a quorum queue and acks when the result is saved, so its two runs
  differ in the result backend: Redis (taskiq-redis, the backend its docs pair it
  with; a private ``redis-server`` in its default configuration, snapshots only) and
  PostgreSQL (taskiq-postgres on asyncpg; a private server with fsync on). Results
  are awaited with ``wait_result``, which polls the backend (every 0.2 s by default).
- **FastStream**: a subscriber that returns its result, which FastStream publishes to
  the request's ``reply_to``: the client's own reply queue (``broker.request`` allows
  one request in flight per broker). Default: a classic queue, transient messages.
  Durable: a quorum queue, ``persist=True``, ack after the handler. FastStream has no
  result store: a reply lives in the client's auto-delete reply queue.

Each worker runs in its own process with its framework's defaults for concurrency
(taskiq: 2 worker processes; FastStream: one subscriber).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script: bench/rpc.py must not shadow rpc

from bench.servers import die_with_parent  # noqa: E402

NOOP = "bench.noop"
# Where the worker processes find their servers (set by PeerServers for its children).
AMQP_ENV, REDIS_ENV, POSTGRES_ENV = "BENCH_PEER_AMQP", "BENCH_PEER_REDIS", "BENCH_PEER_POSTGRES"
FASTSTREAM_QUEUES = {"default": "bench.faststream", "durable": "bench.faststream.durable"}
TASKIQ_QUEUES = {"default": "bench.taskiq", "durable": "bench.taskiq.durable"}
# The module the taskiq worker CLI imports its broker from (REPO on its path).
TASKIQ_MODULE = "bench.task_peers"


# --- the servers the peers need besides the broker ----------------------------------------


@contextlib.contextmanager
def redis_server(base_dir: Path) -> Iterator[str]:
    """A private ``redis-server`` (Debian's) on a free port, as configured by default."""
    from infra.ports import free_port

    port = free_port()
    base_dir.mkdir(parents=True, exist_ok=True)
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(base_dir)],
        preexec_fn=die_with_parent,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_port(port, server)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.terminate()
        server.wait(30)


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """DATABASE_URL's database, else a private PostgreSQL with fsync on."""
    url = os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    from infra.postgres_node import PostgresConfig, PostgresNode

    base_dir = Path(tempfile.mkdtemp(prefix="bench-peers-pg-"))
    node = PostgresNode(PostgresConfig.on_free_port(base_dir, fsync=True))
    try:
        node.start()
        yield node.url()
    finally:
        node.stop()
        shutil.rmtree(base_dir, ignore_errors=True)


def _wait_for_port(port: int, server: subprocess.Popen[bytes], timeout_s: float = 30) -> None:
    import socket

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"redis-server exited with {server.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"redis-server did not listen on {port} within {timeout_s} s")


# --- taskiq -------------------------------------------------------------------------------


def taskiq_broker(variant: str, amqp_url: str, redis_url: str, postgres_url: str) -> Any:
    """The taskiq broker of ``variant`` with its no-op task registered."""
    from taskiq_aio_pika import AioPikaBroker, Queue

    if variant == "durable":
        from taskiq_pg.asyncpg import AsyncpgResultBackend

        backend: Any = AsyncpgResultBackend(dsn=postgres_url, keep_results=False)
    else:
        from taskiq_redis import RedisAsyncResultBackend

        backend = RedisAsyncResultBackend(redis_url=redis_url)
    queue = Queue(name=TASKIQ_QUEUES[variant])
    broker = AioPikaBroker(amqp_url, task_queues=[queue]).with_result_backend(backend)

    @broker.task(task_name=NOOP)
    async def noop(n: int) -> int:
        return n

    return broker


def _taskiq_from_env(variant: str) -> Any:
    return taskiq_broker(
        variant,
        os.environ.get(AMQP_ENV, ""),
        os.environ.get(REDIS_ENV, ""),
        os.environ.get(POSTGRES_ENV, ""),
    )


# ``taskiq worker bench.task_peers:taskiq_default`` (and ``:taskiq_durable``) import these.
taskiq_default = _taskiq_from_env("default") if AMQP_ENV in os.environ else None
taskiq_durable = _taskiq_from_env("durable") if AMQP_ENV in os.environ else None


class Taskiq:
    """Bursts of no-op tasks kicked with ``kiq`` and awaited with ``wait_result``."""

    def __init__(self, broker: Any) -> None:
        self.broker = broker
        self.task = broker.find_task(NOOP)

    @classmethod
    async def create(cls, variant: str, servers: PeerServers) -> Taskiq:
        broker = taskiq_broker(variant, servers.amqp_url, servers.redis_url, servers.postgres_url)
        await broker.startup()
        return cls(broker)

    async def burst(self, n: int) -> float:
        async def one(i: int) -> None:
            kicked = await self.task.kiq(i)
            result = await kicked.wait_result(timeout=120)
            assert not result.is_err and result.return_value == i, result

        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        return n / (time.perf_counter() - started)

    async def close(self) -> None:
        await self.broker.shutdown()


# --- FastStream ---------------------------------------------------------------------------


def faststream_broker(variant: str, amqp_url: str) -> tuple[Any, Any]:
    """(broker, queue) of ``variant``; the broker has the no-op subscriber."""
    from faststream import AckPolicy
    from faststream.rabbit import QueueType, RabbitBroker, RabbitQueue

    broker = RabbitBroker(amqp_url, log_level=logging.WARNING)
    if variant == "durable":
        queue = RabbitQueue(FASTSTREAM_QUEUES[variant], durable=True, queue_type=QueueType.QUORUM)
        subscriber = broker.subscriber(queue, ack_policy=AckPolicy.ACK)
    else:
        queue = RabbitQueue(FASTSTREAM_QUEUES[variant])
        subscriber = broker.subscriber(queue)

    @subscriber
    async def noop(n: int) -> int:
        return n

    return broker, queue


class FastStream:
    """Bursts of no-op messages, each awaited to its reply on this client's reply queue.

    ``broker.request`` holds one lock for every call (one request in flight per
    broker), so a burst through it measures round trips, not throughput; FastStream's
    own pattern for many in flight is a reply queue of the client's, which the handler's
    return value reaches through ``reply_to`` with the request's correlation id.
    """

    def __init__(self, broker: Any, queue: Any, durable: bool) -> None:
        self.broker = broker
        self.queue = queue
        self.durable = durable
        self.replies = f"bench.faststream.replies.{uuid.uuid4().hex}"
        self.waiting: dict[str, asyncio.Future[int]] = {}

    @classmethod
    async def create(cls, variant: str, servers: PeerServers) -> FastStream:
        from faststream.rabbit import RabbitBroker, RabbitMessage, RabbitQueue

        _, queue = faststream_broker(variant, servers.amqp_url)
        client = cls(
            RabbitBroker(servers.amqp_url, log_level=logging.WARNING), queue, variant == "durable"
        )

        @client.broker.subscriber(RabbitQueue(client.replies, auto_delete=True))
        async def on_reply(n: int, message: RabbitMessage) -> None:
            waiter = client.waiting.pop(message.correlation_id, None)
            if waiter is not None:
                waiter.set_result(n)

        await client.broker.start()
        return client

    async def burst(self, n: int) -> float:
        loop = asyncio.get_running_loop()

        async def one(i: int) -> None:
            correlation_id = uuid.uuid4().hex
            reply = self.waiting[correlation_id] = loop.create_future()
            await self.broker.publish(
                i,
                queue=self.queue,
                reply_to=self.replies,
                correlation_id=correlation_id,
                persist=self.durable,
            )
            assert await asyncio.wait_for(reply, 120) == i

        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        return n / (time.perf_counter() - started)

    async def close(self) -> None:
        await self.broker.stop()


async def serve_faststream(variant: str) -> None:
    broker, _ = faststream_broker(variant, os.environ[AMQP_ENV])
    await broker.start()
    try:
        await asyncio.Event().wait()
    finally:
        await broker.stop()


# --- the peers together -------------------------------------------------------------------


class PeerServers:
    """The broker URL, and the Redis and PostgreSQL the taskiq runs keep their results in."""

    def __init__(self, amqp_url: str, redis_url: str, postgres_url: str) -> None:
        self.amqp_url = amqp_url
        self.redis_url = redis_url
        self.postgres_url = postgres_url

    @classmethod
    @contextlib.contextmanager
    def started(cls, amqp_url: str, tmp: Path) -> Iterator[PeerServers]:
        with redis_server(tmp / "redis") as redis_url, postgres_server() as postgres_url:
            yield cls(amqp_url, redis_url, postgres_url)

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            AMQP_ENV: self.amqp_url,
            REDIS_ENV: self.redis_url,
            POSTGRES_ENV: self.postgres_url,
        }

    def start_workers(self) -> list[subprocess.Popen[bytes]]:
        """One worker process (tree) per peer, each as its framework starts it."""
        quiet = {
            "stdout": subprocess.DEVNULL,
            "stderr": subprocess.DEVNULL,
            "preexec_fn": die_with_parent,
        }
        workers = []
        for variant in ("default", "durable"):
            workers.append(
                subprocess.Popen(
                    [sys.executable, "-m", "taskiq", "worker", f"{TASKIQ_MODULE}:taskiq_{variant}"],
                    cwd=REPO,
                    env={**self.env, "PYTHONPATH": str(REPO)},
                    **quiet,  # type: ignore[arg-type]
                )
            )
            workers.append(
                subprocess.Popen(
                    [sys.executable, __file__, "--serve", variant],
                    cwd=REPO,
                    env=self.env,
                    **quiet,  # type: ignore[arg-type]
                )
            )
        return workers

    async def clients(self) -> dict[str, Taskiq | FastStream]:
        return {
            "taskiq": await Taskiq.create("default", self),
            "taskiq-durable": await Taskiq.create("durable", self),
            "faststream": await FastStream.create("default", self),
            "faststream-durable": await FastStream.create("durable", self),
        }


if __name__ == "__main__":
    # ``python bench/task_peers.py --serve default|durable``: a FastStream worker process.
    import uvloop

    uvloop.run(serve_faststream(sys.argv[2]))
