"""Benchmark: the record path's ceilings: the broker's own, and recording with 1, 2, 4 recorders.

1. **Broker ceiling**: status events as the workers publish them (persistent,
   confirmed, to ``status``, sharded by task id over the journal shards), with
   ``--window`` publishes in flight, consumed from every shard with acks
   (prefetch 256), no gateway: events/s from the first publish to the last ack.
   This is the rate bench/sse.py's taskgate side is measured against.
2. **Recording throughput**: ``--events`` events wait in the journal shards; R
   recorder processes (gateway/recorder.py, the gateway's own class and store,
   one SQLite file, the shards split among them with RECORDER_RECORDS) start
   together and record and fan them out: events/s until every event is in the
   store and the shards are empty.

    python bench/sse_record.py                     # 20,000 events, 1/2/4 recorders
    python bench/sse_record.py --events 50000 --recorders 1,2,4
    python bench/sse_record.py --tiny              # seconds: checks that it works
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import broker, check_measured, run
from bench.common import parse_args as parse_with_tiny

TINY = {"events": 400, "tasks": 40, "recorders": "1,2"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=20_000, help="status events (20000)")
    parser.add_argument("--tasks", type=int, default=2_000, help="tasks they belong to (2000)")
    parser.add_argument("--window", type=int, default=500, help="publishes in flight (500)")
    parser.add_argument("--recorders", default="1,2,4", help="recorder counts to run (1,2,4)")
    parser.add_argument("--child", nargs=2, metavar=("DATABASE", "SHARDS"), help=argparse.SUPPRESS)
    return parse_with_tiny(parser, TINY, argv)


def events(count: int, tasks: int) -> list[Any]:
    from workers.messages import new_event

    task_ids = [uuid.uuid4().hex for _ in range(tasks)]
    return [
        new_event("bench.record", task_ids[i % tasks], "progress", 1, percent=float(i % 100))
        for i in range(count)
    ]


async def publish_all(url: str, batch: list[Any], window: int) -> None:
    """Publish ``batch`` as workers do, ``window`` confirms outstanding at most."""
    import rpc
    from workers.status import publish_status
    from workers.topology import declare_status

    connection = await rpc.connect_wire(url, name="bench-record-publisher")
    channel = await connection.open_channel(declare_status, publisher_confirms=True)
    slots = asyncio.Semaphore(window)

    async def one(event: Any) -> None:
        async with slots:
            await publish_status(channel, event)

    await asyncio.gather(*(one(event) for event in batch))
    await connection.close()


async def broker_ceiling(url: str, count: int, *, tasks: int, window: int) -> float:
    """Events/s published (confirmed) and consumed (acked) from every shard, no gateway."""
    import rpc
    from workers.topology import DEFAULT_STATUS_SHARDS, declare_status, status_journal

    batch = events(count, tasks)
    consumer = await rpc.connect_wire(url, name="bench-record-consumer")
    done = asyncio.get_running_loop().create_future()
    consumed = 0

    def on_message(message: Any) -> None:
        nonlocal consumed
        message.ack()
        consumed += 1
        if consumed == count and not done.done():
            done.set_result(time.perf_counter())

    async def consume(channel: Any) -> None:
        await declare_status(channel)
        await channel.basic_qos(prefetch_count=256)
        for shard in range(DEFAULT_STATUS_SHARDS):
            await channel.basic_consume(status_journal(shard), on_message)

    await consumer.open_channel(consume)
    started = time.perf_counter()
    await publish_all(url, batch, window)
    async with asyncio.timeout(300):
        finished = await done
    await consumer.close()
    return count / (finished - started)


async def backlog(url: str) -> int:
    import rpc
    from workers.topology import DEFAULT_STATUS_SHARDS, status_journal

    connection = await rpc.connect_wire(url, name="bench-record-count")
    raw = await connection.raw_channel()
    total = 0
    for shard in range(DEFAULT_STATUS_SHARDS):
        total += (await raw.queue_declare(status_journal(shard), passive=True)).message_count or 0
    await connection.close()
    return total


def recorded(database: Path) -> int:
    with contextlib.closing(sqlite3.connect(database)) as db:
        try:
            return int(db.execute("SELECT count(*) FROM events").fetchone()[0])
        except sqlite3.OperationalError:
            return 0


async def recording_throughput(
    url: str, workdir: Path, recorders: int, count: int, tasks: int, window: int
) -> float:
    """Events/s that ``recorders`` processes record from a full set of journal shards."""
    from workers.topology import DEFAULT_STATUS_SHARDS

    database = workdir / f"record-{recorders}.db"
    await publish_all(url, events(count, tasks), window)
    shares = [
        ",".join(str(s) for s in range(DEFAULT_STATUS_SHARDS) if s % recorders == r)
        for r in range(recorders)
    ]
    children = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--child",
            str(database),
            share,
            env={"AMQP_URL": url, "PATH": "/usr/bin:/bin"},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        for share in shares
    ]
    try:
        for process in children:
            assert process.stdout is not None
            line = await process.stdout.readline()
            assert line.strip() == b"ready", line
        started = time.perf_counter()
        for process in children:
            assert process.stdin is not None
            process.stdin.write(b"go\n")
        async with asyncio.timeout(600):
            # Polled: the store and the broker's counts are in other processes.
            while recorded(database) < count or await backlog(url):  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        return count / (time.perf_counter() - started)
    finally:
        for process in children:
            if process.returncode is None:
                process.terminate()
            await process.wait()


async def child(url: str, database: Path, shards: str) -> None:
    """One recorder process: open the store, say ready, start on "go", run until killed."""
    import rpc
    from gateway.recorder import Recorder
    from gateway.task_store import DatabaseTaskStore
    from infra.database import open_database
    from workers.topology import DEFAULT_STATUS_SHARDS

    db = await open_database(str(database), write_timeout_s=10.0)
    store = await DatabaseTaskStore.open(db)
    connection = await rpc.connect_wire(url, name=f"bench-recorder-{shards}")
    records = [int(s) for s in shards.split(",")]
    recorder = Recorder(store, shards=DEFAULT_STATUS_SHARDS, records=records)
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    await recorder.start(connection)
    await asyncio.Event().wait()


async def main(args: argparse.Namespace) -> int:
    counts = [int(n) for n in args.recorders.split(",")]
    with broker("taskgate-bench-record-") as (url, _pid, workdir):
        ceiling = await broker_ceiling(url, args.events, tasks=args.tasks, window=args.window)
        rates = {}
        for n in counts:
            rates[n] = await recording_throughput(
                url, workdir, n, args.events, args.tasks, args.window
            )
    print(f"{args.events} status events over {args.tasks} tasks, 4 journal shards")
    print(f"broker ceiling (persistent, confirmed, acked, no gateway): {ceiling:,.0f} events/s")
    for n, rate in rates.items():
        print(f"recording, {n} recorder process(es): {rate:,.0f} events/s")
    measured = {"broker.events_per_s": ceiling}
    measured.update({f"recorders.{n}.events_per_s": rate for n, rate in rates.items()})
    return check_measured(measured)


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.child:
        import os

        run(child(os.environ["AMQP_URL"], Path(arguments.child[0]), arguments.child[1]))
    else:
        sys.exit(run(main(arguments)))
