"""Benchmark: many delayed tasks due in the same second, published by one outbox relay.

N task messages (a small payload, as an upload's) are written to the outbox
with the same ``not_before``, some seconds ahead; one relay (one gateway's
share) sleeps until then and publishes them (persistent, confirmed, mandatory)
in batches. A consumer on the kind's queue notes when each arrives. Figures:
how late the first arrived after the due time, how long until the last did,
the rate in between, and what one waiting task costs in the store.

    python bench/scheduled.py                   # 10,000 tasks; a private broker, SQLite
    AMQP_URL=amqp://... python bench/scheduled.py
    DATABASE_URL=postgresql://... python bench/scheduled.py --tasks 20000
    python bench/scheduled.py --tiny            # seconds: checks that it works
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import broker, check_measured, parse_args, run  # noqa: E402
from gateway.outbox import OUTBOX_MIGRATIONS, add_to_outbox, scheduled_count, task_entry  # noqa: E402
from gateway.outbox_relay import OutboxRelay  # noqa: E402
from gateway.publisher import Publisher  # noqa: E402
from infra.database import Database, Transaction, open_database  # noqa: E402
from rpc.connection import connect_wire  # noqa: E402
from rpc.wire import Delivery  # noqa: E402
from workers.messages import TaskMessage, encoder  # noqa: E402
from workers.topology import DEFAULT_QUEUE_MAX_LENGTH, task_queue  # noqa: E402

KIND = "bench.scheduled"
PAYLOAD = {"file": "0123456789abcdef0123456789abcdef/source.jpg", "options": {"quality": 85}}
INSERT_BATCH = 1000


async def schedule(database: Database, tasks: int, due_at: float) -> None:
    payload = encoder.encode(PAYLOAD)
    for start in range(0, tasks, INSERT_BATCH):

        async def write(tx: Transaction, start: int = start) -> None:
            for n in range(start, min(tasks, start + INSERT_BATCH)):
                message = TaskMessage(task_id=f"sched{n:08d}", kind=KIND, payload=payload)  # type: ignore[arg-type]
                entry = task_entry(message, "normal", not_before=due_at)
                await add_to_outbox(tx, entry, max_pending=1)

        await database.write(write, timeout_s=60)


async def store_bytes(database: Database, path: Path | None) -> int:
    """The outbox's size in the store: the SQLite file, or PostgreSQL's table and indexes."""
    if path is not None:
        return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
    return int(
        await database.read(lambda tx: tx.fetchval("SELECT pg_total_relation_size('outbox')"))
    )


async def measure(url: str, database_url: str, sqlite_path: Path | None, args) -> dict[str, float]:  # type: ignore[no-untyped-def]
    database = await open_database(database_url, write_timeout_s=60)
    await database.migrate("outbox", OUTBOX_MIGRATIONS)
    connection = await connect_wire(url, name="bench-scheduled")
    publisher = Publisher(queue_max_length=DEFAULT_QUEUE_MAX_LENGTH, timeout_s=30)
    await publisher.start(connection)
    await publisher.declare_kind(KIND)
    arrivals: list[float] = []
    all_in = asyncio.Event()

    def arrived(message: Delivery) -> None:
        arrivals.append(time.time())
        if len(arrivals) == args.tasks:
            all_in.set()

    channel = await connection.raw_channel()
    await channel.queue_purge(task_queue(KIND))
    await channel.basic_consume(task_queue(KIND), arrived, no_ack=True)
    before = await store_bytes(database, sqlite_path)
    due_at = time.time() + args.lead_s
    written = time.perf_counter()
    await schedule(database, args.tasks, due_at)
    written_s = time.perf_counter() - written
    waiting = await database.read(scheduled_count)
    row_bytes = (await store_bytes(database, sqlite_path) - before) / args.tasks
    if time.time() >= due_at:
        raise SystemExit(f"writing took {written_s:.1f} s, past the due time: raise --lead-s")
    relay = OutboxRelay(database, publisher, lease_s=30.0, poll_s=args.lead_s * 10, retry_max_s=1.0)
    relay.start()
    try:
        await asyncio.wait_for(all_in.wait(), timeout=args.lead_s + 600)
    finally:
        await relay.close()
        await channel.close()
        await publisher.close()
        await connection.close()
        await database.close()
    first_late_s = arrivals[0] - due_at
    spread_s = arrivals[-1] - due_at
    rate = args.tasks / max(arrivals[-1] - arrivals[0], 1e-9)
    print(
        f"{args.tasks:,} delayed tasks ({'SQLite' if sqlite_path else 'PostgreSQL'} store,"
        f" one relay, batches of 200)\n"
        f"  written in {written_s:.2f} s; {waiting:,} waiting; about {row_bytes:,.0f} bytes"
        f" of store per waiting task\n"
        f"  due at T: first on its queue at T+{first_late_s:.3f} s,"
        f" the last at T+{spread_s:.2f} s ({rate:,.0f} tasks/s)"
    )
    return {"relay.tasks_published": float(len(arrivals)), "relay.tasks_per_s": rate}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=10_000, help="delayed tasks, all due at once")
    parser.add_argument(
        "--lead-s", type=float, default=10.0, help="how far ahead they are due (covers writing)"
    )
    args = parse_args(parser, tiny={"tasks": 300, "lead_s": 3.0})
    with broker("bench-scheduled-") as (url, _, tmp):
        database_url = os.environ.get("DATABASE_URL")
        sqlite_path = None
        if database_url is None:
            sqlite_path = tmp / "store.db"
            database_url = str(sqlite_path)
        measured = run(measure(url, database_url, sqlite_path, args))
    return check_measured(measured)


if __name__ == "__main__":
    sys.exit(main())
