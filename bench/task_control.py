"""Benchmark: what task lists, cancels and retention cost in the store (issue 18).

Fills the store with ``--tasks`` tasks (3 events each, 10 owners, half finished,
created one second apart) straight through SQL, then times, each as the median
of ``--repeat`` runs:

- ``GET /tasks``'s query: a user's first page of 50, a page 40 % deep (by cursor),
  the same with a state filter, and an admin's first page (everyone's tasks);
- the cancel transaction of a queued task (claim, outcome, release, ``cancelled``
  event and summary), per cancel;
- a worker's cancel poll for 8 running tasks (``TASK_CANCEL_POLL_S``), per poll;
- retention: removing finished tasks, 500 per transaction, in tasks per second.

    python bench/task_control.py                       # SQLite in a temp dir, 100,000 tasks
    DATABASE_URL=postgresql://... python bench/task_control.py   # that PostgreSQL database
    python bench/task_control.py --postgres            # a private PostgreSQL (fsync on)
    python bench/task_control.py --tiny                # seconds: checks that it works
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import check_measured, parse_args  # noqa: E402
from gateway import task_inputs  # noqa: E402
from gateway.idempotency import UPLOAD_KEY_MIGRATIONS  # noqa: E402
from gateway.retention import Retention  # noqa: E402
from gateway.store import TaskQuery  # noqa: E402
from gateway.task_list import encode_cursor  # noqa: E402
from gateway.task_store import DatabaseTaskStore, record_events  # noqa: E402
from infra.database import Database, Transaction, open_database  # noqa: E402
from infra.local_storage import LocalStorage  # noqa: E402
from infra.postgres_node import PostgresConfig, PostgresNode  # noqa: E402
from workers import task_records  # noqa: E402
from workers.messages import encoder, new_event  # noqa: E402

OWNERS = 10
CHUNK = 5_000


async def fill(database: Database, tasks: int) -> float:
    """``tasks`` tasks (a third of each state: queued, running, succeeded); the newest time."""
    start = time.time() - tasks - 10 * 24 * 3600  # the finished ones are past a 1-day retention
    states = ("queued", "running", "succeeded")
    for first in range(0, tasks, CHUNK):
        rows, events = [], []
        for n in range(first, min(first + CHUNK, tasks)):
            task_id, created = f"t{n:08d}", start + n
            state = states[n % 3]
            rows.append(
                (task_id, "images.thumbnail", state, 1, created, created, 3, None, None, None,
                 None, f"user{n % OWNERS}")
            )  # fmt: skip
            events.extend((task_id, seq, uuid.uuid4().hex, "queued", b"{}") for seq in (1, 2, 3))

        async def insert(tx: Transaction, rows=rows, events=events) -> None:  # type: ignore[no-untyped-def]
            await tx.executemany(
                "INSERT INTO tasks (task_id, kind, state, attempt, created_at, updated_at,"
                " last_seq, percent, message, result, error, owner)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                rows,
            )
            await tx.executemany(
                "INSERT INTO events (task_id, seq, event_id, state, body)"
                " VALUES ($1, $2, $3, $4, $5)",
                events,
            )

        await database.write(insert, timeout_s=120)
    return start + tasks


async def print_plan(database: Database) -> None:
    """The plan of a user's page after a cursor: it must walk tasks_owner_created."""
    explain = "EXPLAIN QUERY PLAN" if database.dialect == "sqlite" else "EXPLAIN"
    sql = (
        f"{explain} SELECT task_id FROM tasks WHERE owner = $1 AND (created_at, task_id) < ($2, $3)"
        " ORDER BY created_at DESC, task_id DESC LIMIT 51"
    )
    rows = await database.read(lambda tx: tx.fetch(sql, "user3", 1e12, "t"))
    print("plan:", " | ".join(str(row[-1]) for row in rows))


async def median_ms(repeat: int, work: Callable[[], Awaitable[object]]) -> float:
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        await work()
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times)


async def measure(database: Database, tasks: int, repeat: int) -> dict[str, float]:
    store = await DatabaseTaskStore.open(database)
    await task_records.migrate(database)
    await database.migrate("upload_keys", UPLOAD_KEY_MIGRATIONS)
    # Retention forgets a task's kept input too (gateway/app.py migrates it the same way).
    await database.migrate(task_inputs.COMPONENT, task_inputs.MIGRATIONS)
    began = time.perf_counter()
    newest = await fill(database, tasks)
    print(f"filled {tasks} tasks in {time.perf_counter() - began:.1f} s ({database.dialect})")
    if database.dialect == "postgresql":
        # What autovacuum does after a bulk load: without statistics, the planner guesses.
        await database.write(lambda tx: tx.execute("ANALYZE"), timeout_s=300)
    await print_plan(database)
    deep = (newest - int(tasks * 0.4), "t")
    queries = {
        "list_first_page_ms": TaskQuery(limit=51, owner="user3"),
        "list_deep_page_ms": TaskQuery(limit=51, owner="user3", before=deep),
        "list_state_filter_ms": TaskQuery(limit=51, owner="user3", state="running"),
        "list_admin_page_ms": TaskQuery(limit=51),
    }
    figures: dict[str, float] = {}
    for name, query in queries.items():
        figures[name] = await median_ms(repeat, lambda q=query: store.list_tasks(q))  # type: ignore[misc]
    encode_cursor(*deep)  # the cursor a client would pass: cheap, not measured

    queued = [f"t{n:08d}" for n in range(0, min(tasks, 3 * repeat), 3)]

    async def cancel_one() -> None:
        task_id = queued.pop()
        event = new_event("images.thumbnail", task_id, "cancelled", 1, error="bench")

        async def cancel(tx: Transaction) -> None:
            await task_records.cancel(tx, event, holder="bench", now_s=time.time())
            await record_events(tx, [(event, encoder.encode(event))])

        await database.write(cancel)

    figures["cancel_ms"] = await median_ms(len(queued), cancel_one)
    running = [f"t{n:08d}" for n in range(1, 25, 3)]
    figures["cancel_poll_ms"] = await median_ms(
        repeat, lambda: database.read(lambda tx: task_records.cancels_requested(tx, running))
    )
    retention = Retention(
        database, LocalStorage(Path(tempfile.gettempdir()) / "none"), retention_s=86400, batch=500
    )
    began = time.perf_counter()
    removed = await retention.sweep()
    figures["retention_tasks_per_s"] = removed / (time.perf_counter() - began)
    return figures


@contextlib.contextmanager
def database_url(postgres: bool) -> Iterator[str]:
    """DATABASE_URL, a private PostgreSQL, or a SQLite file in a temp dir."""
    if os.environ.get("DATABASE_URL"):
        yield os.environ["DATABASE_URL"]
        return
    with tempfile.TemporaryDirectory(prefix="bench-task-control-") as tmp:
        if not postgres:
            yield str(Path(tmp) / "taskgate.db")
            return
        node = PostgresNode(PostgresConfig.on_free_port(Path(tmp), fsync=True))
        node.start()
        try:
            yield node.create_database("bench")
        finally:
            node.stop()


async def main(args: argparse.Namespace) -> int:
    with database_url(args.postgres) as url:
        database = await open_database(url, write_timeout_s=30)
        try:
            figures = await measure(database, args.tasks, args.repeat)
        finally:
            await database.close()
    for name, value in figures.items():
        print(f"{name:24} {value:10.3f}")
    return check_measured(figures)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--postgres", action="store_true", help="a private PostgreSQL")
    sys.exit(asyncio.run(main(parse_args(parser, {"tasks": 1_000, "repeat": 5}))))
