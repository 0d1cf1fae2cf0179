"""Benchmark: what the admin page's live state costs the store (issue 20, point 1).

On a store of its own (a SQLite file in a temporary directory, or DATABASE_URL)
holding N tasks (a tenth queued, the rest ended over the last 15 minutes, in
8 kinds), 1,000 worker claims, 50 presence rows and an hour of history samples,
this times the store part of one overview sample and one 15-minute history:

    python bench/admin.py                       # N = 100,000
    DATABASE_URL=postgresql://... python bench/admin.py
    python bench/admin.py --tiny                # seconds: checks that it works

``--record`` instead times what an index of the tasks by end time would cost the
recorder (why ends are counted from the live feed, gateway/admin/throughput.py):
batches of 256 status events (64 tasks: running, 2 progress, an end) recorded
with and without the index ``FINISHED_INDEX``, alternately, events/s each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import check_measured  # noqa: E402
from gateway import autoscale  # noqa: E402
from gateway.admin import overview  # noqa: E402
from gateway.admin.history import history  # noqa: E402
from gateway.task_store import DatabaseTaskStore  # noqa: E402
from infra import presence  # noqa: E402
from infra.database import Database, Transaction, open_database  # noqa: E402
from workers import claims, kinds  # noqa: E402
from workers.messages import new_event  # noqa: E402

KINDS = [f"bench.kind{n}" for n in range(8)]
FINISHED_INDEX = (
    "CREATE INDEX IF NOT EXISTS tasks_finished ON tasks (updated_at)"
    " WHERE state IN ('succeeded', 'failed', 'dead', 'cancelled')"
)


async def fill(database: Database, count: int) -> None:
    await DatabaseTaskStore.open(database)
    await database.migrate(autoscale.COMPONENT, autoscale.MIGRATIONS)
    await database.migrate(overview.COMPONENT, overview.MIGRATIONS)
    await database.migrate(presence.COMPONENT, presence.MIGRATIONS)
    await database.migrate(claims.COMPONENT, claims.MIGRATIONS)
    await kinds.register(database, KINDS, 16)
    now = time.time()
    rows = []
    for n in range(count):
        kind = KINDS[n % len(KINDS)]
        state = "queued" if n % 10 == 0 else ("failed" if n % 50 == 1 else "succeeded")
        at = now - 900 * n / count
        rows.append((f"t{n:08d}", kind, state, 1, at - 1, at, 1, None, None, None, None, "u"))

    async def insert(tx: Transaction) -> None:
        await tx.executemany(
            "INSERT INTO tasks (task_id, kind, state, attempt, created_at, updated_at, last_seq,"
            " percent, message, result, error, owner)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            rows,
        )
        await tx.executemany(
            "INSERT INTO worker_claims (scope, item_id, holder, until_s, kind)"
            " VALUES ('task', $1, 'w', $2, $3)",
            [(f"c{n}", now + 60, KINDS[n % len(KINDS)]) for n in range(1_000)],
        )
        report = json.dumps({"kinds": KINDS, "running": []})
        await tx.executemany(
            "INSERT INTO presence (name, role, host, pid, started_at, seen_at, report)"
            " VALUES ($1, 'worker', 'h', 1, $2, $2, $3)",
            [(f"w{n}", now, report) for n in range(50)],
        )
        await tx.executemany(
            "INSERT INTO admin_samples (at, kind, queued, in_flight, done, failed)"
            " VALUES ($1, $2, 10, 16, 100, 2)",
            [(now - 15.0 * step, kind) for step in range(240) for kind in KINDS],
        )

    await database.write(insert)
    # What autovacuum would have done by then.
    await database.write(lambda tx: tx.execute("ANALYZE"))


async def timed(runs: int, fn) -> float:  # type: ignore[no-untyped-def]
    took = []
    for _ in range(runs):
        started = time.perf_counter()
        await fn()
        took.append(time.perf_counter() - started)
    return statistics.median(took) * 1000


async def record_rate(database: Database, store: DatabaseTaskStore, batches: int) -> float:
    """Events/s recording ``batches`` batches of 256 events of new tasks."""
    import msgspec

    took = 0.0
    for _ in range(batches):
        ids = [os.urandom(8).hex() for _ in range(64)]
        events = []
        for state in ("running", "progress", "progress", "succeeded"):
            for task_id in ids:
                event = new_event(KINDS[0], task_id, state, 1, percent=50.0)  # type: ignore[arg-type]
                events.append((event, msgspec.json.encode(event)))
        started = time.perf_counter()
        await store.record(events, owner="u")
        took += time.perf_counter() - started
    return batches * 256 / took


async def compare_recording(database: Database, rounds: int, batches: int) -> dict[str, float]:
    store = await DatabaseTaskStore.open(database)
    await database.migrate(autoscale.COMPONENT, autoscale.MIGRATIONS)
    create = FINISHED_INDEX
    rates: dict[str, list[float]] = {"with": [], "without": []}
    for _ in range(rounds):
        for label in ("without", "with"):
            sql = create if label == "with" else "DROP INDEX IF EXISTS tasks_finished"
            await database.write(lambda tx, sql=sql: tx.execute(sql))  # type: ignore[misc]
            rates[label].append(await record_rate(database, store, batches))
    print(
        f"{database.dialect}: recording {statistics.median(rates['without']):,.0f} events/s"
        f" without tasks_finished, {statistics.median(rates['with']):,.0f} with it"
        f" (medians of {rounds} rounds of {batches} batches of 256)"
    )
    return {
        "record_per_s.without": statistics.median(rates["without"]),
        "record_per_s.with": statistics.median(rates["with"]),
    }


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--record", action="store_true")
    parser.add_argument("--tiny", action="store_true", help="2,000 tasks, 3 runs")
    args = parser.parse_args()
    if args.tiny:
        args.tasks, args.runs = 2_000, 3
    with tempfile.TemporaryDirectory() as tmp:
        database = await open_database(
            os.environ.get("DATABASE_URL") or str(Path(tmp) / "b.db"), write_timeout_s=600
        )
        try:
            if args.record:
                rounds, batches = (1, 2) if args.tiny else (5, 40)
                return check_measured(await compare_recording(database, rounds, batches))
            await fill(database, args.tasks)
            sample_ms = await timed(
                args.runs,
                lambda: database.read(lambda tx: overview._from_store(tx, time.time(), 15.0)),
            )
            history_ms = await timed(args.runs, lambda: history(database, minutes=15, step_s=15.0))
        finally:
            await database.close()
    print(
        f"{database.dialect}, {args.tasks:,} tasks: overview store read {sample_ms:.1f} ms,"
        f" 15-minute history {history_ms:.1f} ms (medians of {args.runs})"
    )
    return check_measured({"overview_ms": sample_ms, "history_ms": history_ms})


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
