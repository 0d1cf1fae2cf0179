"""Benchmark: asyncpg vs psycopg 3 (async) on the status recorder's workload, same server.

The recorder takes status events in batches of 256, for about 64 tasks at a
time, and records each batch in one transaction. Per event: lock the task's
row (``SELECT ... FOR UPDATE``) to read its last sequence number, insert the
event with the next one, idempotent by event id (``ON CONFLICT DO NOTHING``;
1 event in 32 is a redelivery), then upsert the task's summary row. Each task
has 8 events (queued, running, 5 progress, succeeded); a finished task is
replaced by a new one. Both drivers run the same SQL on one connection each,
in one process on uvloop, and take turns, round after round, on the same tables
(each round with new task ids). Figures: events/s, and the CPU of this process
(the client) and of the server's processes, per event. Every round's rows are
checked (one event per event id, each task's sequence 1..n without a gap).

    python bench/store_drivers.py                  # starts a private PostgreSQL (fsync on)
    DATABASE_URL=postgresql://... python bench/store_drivers.py   # uses that database
    python bench/store_drivers.py --batches 80 --rounds 7
    python bench/store_drivers.py --psycopg-tuned  # binary, statements prepared at once
    python bench/store_drivers.py --tiny           # seconds: checks that it works
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import asyncpg  # noqa: E402
import psycopg  # noqa: E402

from bench.common import Medians, alternate, check_measured, parse_args, run  # noqa: E402
from bench.procfs import cpu_s, descendants, own_cpu_s  # noqa: E402
from infra.postgres_node import PostgresConfig, PostgresNode  # noqa: E402

BATCH = 256
ACTIVE_TASKS = 64
STATES = ("queued", "running", *(["progress"] * 5), "succeeded")
REDELIVERY_EVERY = 32

SCHEMA = """
CREATE TABLE IF NOT EXISTS bench_tasks (
    task_id TEXT PRIMARY KEY, state TEXT NOT NULL, last_seq BIGINT NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL);
CREATE TABLE IF NOT EXISTS bench_events (
    task_id TEXT NOT NULL, seq BIGINT NOT NULL, event_id TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL, body BYTEA NOT NULL, at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (task_id, seq))
"""
LOCK_TASK = "SELECT last_seq FROM bench_tasks WHERE task_id = $1 FOR UPDATE"
INSERT_EVENT = (
    "INSERT INTO bench_events (task_id, seq, event_id, state, body, at) "
    "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (event_id) DO NOTHING"
)
UPSERT_TASK = (
    "INSERT INTO bench_tasks (task_id, state, last_seq, updated_at) VALUES ($1, $2, $3, $4) "
    "ON CONFLICT (task_id) DO UPDATE SET state = excluded.state, last_seq = excluded.last_seq, "
    "updated_at = excluded.updated_at"
)

Event = tuple[str, str, str, bytes]  # task_id, event_id, state, body


def events(count: int, seed: int) -> list[Event]:
    """``count`` events of ~64 interleaved tasks, with redeliveries; new task ids each call."""
    rng = random.Random(seed)
    prefix = uuid.uuid4().hex[:8]
    made = 0
    active: list[list[Any]] = []  # [task_id, events so far]
    out: list[Event] = []
    while len(out) < count:
        while len(active) < ACTIVE_TASKS:
            active.append([f"{prefix}-{made:06d}", 0])
            made += 1
        if out and len(out) % REDELIVERY_EVERY == 0:
            out.append(out[rng.randrange(max(0, len(out) - BATCH), len(out))])
            continue
        task = active[rng.randrange(len(active))]
        state = STATES[task[1]]
        body = b'{"state":"%s","progress":%d,"detail":"%s"}' % (
            state.encode(),
            task[1],
            b"x" * rng.randrange(40, 160),
        )
        out.append((task[0], f"{task[0]}.{task[1]}", state, body))
        task[1] += 1
        if task[1] == len(STATES):
            active.remove(task)
    return out


def batches(all_events: list[Event]) -> list[list[Event]]:
    return [all_events[i : i + BATCH] for i in range(0, len(all_events), BATCH)]


class AsyncpgRecorder:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def record(self, batch: list[Event]) -> None:
        conn = self.conn
        async with conn.transaction():
            for task_id, event_id, state, body in batch:
                last = await conn.fetchval(LOCK_TASK, task_id)
                seq = (last or 0) + 1
                now = time.time()
                status = await conn.execute(INSERT_EVENT, task_id, seq, event_id, state, body, now)
                if status.endswith(" 1"):  # "INSERT 0 1": not a redelivery
                    await conn.execute(UPSERT_TASK, task_id, state, seq, now)


def _percent_s(sql: str) -> str:
    """$1..$n (each once, in order) as psycopg's %s."""
    return re.sub(r"\$\d+", "%s", sql)


class PsycopgRecorder:
    lock_task = _percent_s(LOCK_TASK)
    insert_event = _percent_s(INSERT_EVENT)
    upsert_task = _percent_s(UPSERT_TASK)

    def __init__(self, conn: psycopg.AsyncConnection[Any], binary: bool) -> None:
        self.conn = conn
        self.binary = binary

    async def record(self, batch: list[Event]) -> None:
        conn = self.conn
        async with conn.transaction():
            cur = conn.cursor(binary=self.binary)
            for task_id, event_id, state, body in batch:
                await cur.execute(self.lock_task, (task_id,))
                row = await cur.fetchone()
                seq = (row[0] if row else 0) + 1
                now = time.time()
                await cur.execute(self.insert_event, (task_id, seq, event_id, state, body, now))
                if cur.rowcount == 1:
                    await cur.execute(self.upsert_task, (task_id, state, seq, now))


@dataclass
class Side:
    """One driver's rounds: its rate per round and the CPU per event it cost."""

    name: str
    record: Callable[[list[Event]], Awaitable[None]]
    client_us: list[float]
    server_us: list[float]


async def check_recorded(conn: asyncpg.Connection, round_events: list[Event]) -> None:
    """Every event id once, every task's sequence 1..n with no gap: or the round did not count."""
    tasks = sorted({task_id for task_id, *_ in round_events})
    unique = len({event_id for _, event_id, *_ in round_events})
    rows = await conn.fetch(
        "SELECT task_id, count(*), max(seq) FROM bench_events WHERE task_id = ANY($1) "
        "GROUP BY task_id",
        tasks,
    )
    assert sum(r[1] for r in rows) == unique, (sum(r[1] for r in rows), unique)
    assert all(r[1] == r[2] for r in rows), "a gap in a task's sequence"


async def compare(
    url: str,
    batch_count: int,
    rounds: int,
    server_pids: Callable[[], list[int]],
    psycopg_tuned: bool,
):
    check = await asyncpg.connect(url)
    await check.execute(SCHEMA)
    a_conn = await asyncpg.connect(url)
    # Tuned: binary parameters and results, every statement prepared at its first use.
    p_conn = await psycopg.AsyncConnection.connect(url, prepare_threshold=0 if psycopg_tuned else 5)
    sides = {
        "asyncpg": Side("asyncpg", AsyncpgRecorder(a_conn).record, [], []),
        "psycopg": Side("psycopg", PsycopgRecorder(p_conn, psycopg_tuned).record, [], []),
    }
    seeds = iter(range(1_000_000))

    async def one_round(side: Side, count: int) -> float:
        round_events = events(count * BATCH, next(seeds))
        pids = server_pids()
        client0, server0 = own_cpu_s(), sum(cpu_s(p) for p in pids)
        started = time.perf_counter()
        for batch in batches(round_events):
            await side.record(batch)
        elapsed = time.perf_counter() - started
        client = own_cpu_s() - client0
        server = sum(cpu_s(p) for p in pids) - server0
        await check_recorded(check, round_events)
        side.client_us.append(client / len(round_events) * 1e6)
        side.server_us.append(server / len(round_events) * 1e6)
        return len(round_events) / elapsed

    try:
        for side in sides.values():  # warm: connections, prepared statements, caches
            await one_round(side, max(1, batch_count // 4))
            side.client_us.clear()
            side.server_us.clear()
        results = await alternate(
            rounds,
            lambda: one_round(sides["psycopg"], batch_count),
            lambda: one_round(sides["asyncpg"], batch_count),
            ("psycopg", "asyncpg"),
            "events/s",
        )
    finally:
        await a_conn.close()
        await p_conn.close()
        await check.close()
    return results, sides


@contextlib.contextmanager
def database(fsync: bool) -> Iterator[tuple[str, Callable[[], list[int]]]]:
    """(URL, the server's pids now): DATABASE_URL's database, else a private server's."""
    url = os.environ.get("DATABASE_URL")
    if url:
        yield url, list
        return
    base_dir = Path(tempfile.mkdtemp(prefix="bench-store-drivers-"))
    node = PostgresNode(PostgresConfig.on_free_port(base_dir, fsync=fsync))
    try:
        node.start()

        def pids() -> list[int]:
            pid = node.pid
            return [pid, *descendants(pid)] if pid else []

        yield node.url(), pids
    finally:
        node.stop()
        shutil.rmtree(base_dir, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--batches", type=int, default=40, help=f"batches of {BATCH} per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-fsync", action="store_true", help="the private server without fsync")
    parser.add_argument(
        "--psycopg-tuned",
        action="store_true",
        help="psycopg with binary parameters and statements prepared at first use",
    )
    args = parse_args(parser, tiny={"batches": 2, "rounds": 2})
    with database(fsync=not args.no_fsync) as (url, server_pids):
        results, sides = run(
            compare(url, args.batches, args.rounds, server_pids, args.psycopg_tuned)
        )
    m = Medians.of(results)
    a, p = sides["asyncpg"], sides["psycopg"]
    server_known = any(a.server_us)
    print(
        f"\n{'driver':<9} {'events/s':>9} {'client µs/event':>16} "
        f"{'server µs/event':>16}   (median of {args.rounds} rounds of "
        f"{args.batches} x {BATCH} events, one connection each)"
    )
    for side, rate in ((a, m.ours), (p, m.base)):
        server = f"{statistics.median(side.server_us):>16.0f}" if server_known else f"{'-':>16}"
        print(f"{side.name:<9} {rate:>9,.0f} {statistics.median(side.client_us):>16.0f} {server}")
    print(
        f"\nasyncpg/psycopg events/s: median {m.ratio:.2f}x, range {m.low:.2f}-{m.high:.2f}x; "
        f"psycopg {psycopg.__version__}, asyncpg {asyncpg.__version__}"
    )
    return check_measured({"asyncpg.events_per_s": m.ours, "psycopg.events_per_s": m.base})


if __name__ == "__main__":
    sys.exit(main())
