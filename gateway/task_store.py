"""The task store on ``infra.database``: tasks and their events, in SQL for both backends.

``record_events`` is the one place events are numbered and summaries change;
it runs inside any write transaction, so accepting work can record a task's
``queued`` event in the same commit as its outbox entry.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from dataclasses import fields
from operator import attrgetter
from typing import get_args

from infra.database import Database, Migration, Row, Transaction
from workers.messages import TERMINAL_STATES, State, StatusEvent

from .store import RejectedEvent, StoredEvent, TaskQuery, TaskSummary, apply_event, reopens

COMPONENT = "tasks"

TASK_MIGRATIONS: list[Migration] = [
    # 1: the schema of the SQLite-only store, adopted as it is by an existing file.
    {
        "sqlite": """
            CREATE TABLE IF NOT EXISTS tasks (
                task_id TEXT PRIMARY KEY, kind TEXT NOT NULL, state TEXT NOT NULL,
                attempt INTEGER NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL,
                last_seq INTEGER NOT NULL, percent REAL, message TEXT, result TEXT,
                error TEXT, owner TEXT
            );
            CREATE TABLE IF NOT EXISTS events (
                task_id TEXT NOT NULL, seq INTEGER NOT NULL, event_id TEXT NOT NULL UNIQUE,
                state TEXT NOT NULL, body BLOB NOT NULL, PRIMARY KEY (task_id, seq)
            ) WITHOUT ROWID;
            CREATE TABLE IF NOT EXISTS write_probe (
                id INTEGER PRIMARY KEY CHECK (id = 1), checked_at REAL NOT NULL
            )
        """,
        "postgresql": """
            CREATE TABLE tasks (
                task_id TEXT PRIMARY KEY, kind TEXT NOT NULL, state TEXT NOT NULL,
                attempt BIGINT NOT NULL, created_at DOUBLE PRECISION NOT NULL,
                updated_at DOUBLE PRECISION NOT NULL, last_seq BIGINT NOT NULL,
                percent DOUBLE PRECISION, message TEXT, result TEXT, error TEXT, owner TEXT
            );
            CREATE TABLE events (
                task_id TEXT NOT NULL, seq BIGINT NOT NULL, event_id TEXT NOT NULL UNIQUE,
                state TEXT NOT NULL, body BYTEA NOT NULL, PRIMARY KEY (task_id, seq)
            );
            -- One row the readiness check rewrites: only a commit proves the store takes writes.
            CREATE TABLE write_probe (
                id BIGINT PRIMARY KEY CHECK (id = 1), checked_at DOUBLE PRECISION NOT NULL
            )
        """,
    },
    # 2: a user's unfinished tasks are counted at each upload (gateway/upload_limits.py).
    "CREATE INDEX IF NOT EXISTS tasks_owner_state ON tasks (owner, state)",
    # 3: task lists, newest first, a user's or everyone's (gateway/task_list.py); the
    # retention sweep finds old tasks by the second too.
    "CREATE INDEX IF NOT EXISTS tasks_owner_created ON tasks (owner, created_at, task_id);"
    "CREATE INDEX IF NOT EXISTS tasks_created ON tasks (created_at, task_id)",
]

# In the order of TaskSummary's fields.
_COLUMNS = (
    "task_id, kind, state, attempt, created_at, updated_at, last_seq,"
    " percent, message, result, error, owner"
)
_UPSERT_TASK = (
    f"INSERT INTO tasks ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
    " ON CONFLICT (task_id) DO UPDATE SET"
    + ",".join(f" {c} = excluded.{c}" for c in _COLUMNS.replace(" ", "").split(",")[1:])
)


_UNFINISHED = tuple(state for state in get_args(State) if state not in TERMINAL_STATES)


# A summary's column values, in _COLUMNS' order (dataclasses.astuple deep-copies each one).
_summary_row = attrgetter(*(field.name for field in fields(TaskSummary)))


def _summary(row: Row | None) -> TaskSummary | None:
    return None if row is None else TaskSummary(*row)


async def record_events(
    tx: Transaction,
    events: Sequence[tuple[StatusEvent, bytes]],
    *,
    owner: str | None = None,
) -> list[StoredEvent | RejectedEvent]:
    """Record ``(event, its JSON)`` pairs in order; one result per event.

    A duplicate ``event_id`` is not recorded again: its first copy is returned.
    An event that comes after its task's terminal event is not recorded: it is
    a ``RejectedEvent`` (but see ``reopens``). A task the events create belongs to ``owner``.

    A batch costs a few statements, not a few per event: the copies already
    recorded and the tasks' summaries (locked) are read at once, the events
    numbered in memory, and the rows written with ``executemany``.
    """
    if not events:
        return []
    seen = {
        event_id: StoredEvent(task_id, seq, state, bytes(body))
        for task_id, seq, event_id, state, body in await _fetch_in(
            tx,
            "SELECT task_id, seq, event_id, state, body FROM events WHERE event_id IN ({})",
            {event.event_id for event, _ in events},
        )
    }
    # Locked in task id order, so two transactions never wait on each other's rows.
    summaries = {
        row[0]: TaskSummary(*row)
        for row in await _fetch_in(
            tx,
            f"SELECT {_COLUMNS} FROM tasks WHERE task_id IN ({{}}) ORDER BY task_id FOR UPDATE",
            {event.task_id for event, _ in events},
        )
    }
    changed: dict[str, TaskSummary] = {}
    new_rows: list[tuple[str, int, str, str, bytes]] = []
    results: list[StoredEvent | RejectedEvent] = []
    for event, body in events:
        first = seen.get(event.event_id)
        if first is not None:
            results.append(first)
            continue
        summary = summaries.get(event.task_id)
        if summary is not None and summary.terminal and not reopens(summary, event):
            reason = (
                f"task {event.task_id} already ended {summary.state}; {event.state} is too late"
            )
            results.append(RejectedEvent(event.task_id, event.event_id, reason))
            continue
        summary = summaries[event.task_id] = changed[event.task_id] = apply_event(
            summary, event, owner=owner
        )
        stored = seen[event.event_id] = StoredEvent(
            event.task_id, summary.last_seq, event.state, body
        )
        new_rows.append((event.task_id, summary.last_seq, event.event_id, event.state, body))
        results.append(stored)
    if changed:
        await tx.executemany(_UPSERT_TASK, [_summary_row(s) for s in changed.values()])
        await tx.executemany(
            "INSERT INTO events (task_id, seq, event_id, state, body) VALUES ($1, $2, $3, $4, $5)",
            new_rows,
        )
    return results


# Values per IN list: a few statement shapes (powers of two) for the statement caches.
_IN_CHUNK = 256


async def _fetch_in(tx: Transaction, sql: str, values: Collection[str]) -> list[Row]:
    """The rows of ``sql`` whose ``IN ({})`` takes each of ``values`` (in chunks)."""
    ordered = sorted(values)
    rows: list[Row] = []
    for start in range(0, len(ordered), _IN_CHUNK):
        chunk = ordered[start : start + _IN_CHUNK]
        # Padded with its last value up to a power of two: IN ignores the repeats.
        size = 1 << (len(chunk) - 1).bit_length()
        chunk += [chunk[-1]] * (size - len(chunk))
        placeholders = ", ".join(f"${n}" for n in range(1, size + 1))
        rows += await tx.fetch(sql.format(placeholders), *chunk)
    return rows


class DatabaseTaskStore:
    """``TaskStore`` on a database; create with ``await DatabaseTaskStore.open(database)``.

    The store does not own the database: whoever opened it closes it.
    """

    def __init__(self, database: Database) -> None:
        self.database = database

    @classmethod
    async def open(cls, database: Database) -> DatabaseTaskStore:
        await database.migrate(COMPONENT, TASK_MIGRATIONS)
        return cls(database)

    async def close(self) -> None:
        pass

    async def record(
        self, events: Sequence[tuple[StatusEvent, bytes]], *, owner: str | None = None
    ) -> list[StoredEvent | RejectedEvent]:
        return await self.database.write(lambda tx: record_events(tx, events, owner=owner))

    async def discard_task(self, task_id: str) -> None:
        async def discard(tx: Transaction) -> None:
            await tx.execute("DELETE FROM events WHERE task_id = $1", task_id)
            await tx.execute("DELETE FROM tasks WHERE task_id = $1", task_id)

        await self.database.write(discard)

    async def get_task(self, task_id: str) -> TaskSummary | None:
        async def get(tx: Transaction) -> TaskSummary | None:
            return _summary(
                await tx.fetchrow(f"SELECT {_COLUMNS} FROM tasks WHERE task_id = $1", task_id)
            )

        return await self.database.read(get)

    async def get_tasks(self, task_ids: Collection[str]) -> list[TaskSummary]:
        """The tasks of ``task_ids`` that exist, in no order: one read however many."""

        async def get(tx: Transaction) -> list[TaskSummary]:
            sql = f"SELECT {_COLUMNS} FROM tasks WHERE task_id IN ({{}})"
            return [TaskSummary(*row) for row in await _fetch_in(tx, sql, task_ids)]

        return await self.database.read(get)

    async def count_unfinished(self, owner: str, up_to: int) -> int:
        """Tasks of ``owner`` not in a terminal state, counted up to ``up_to`` (a bounded read
        however many tasks the owner has)."""

        async def count(tx: Transaction) -> int:
            row = await tx.fetchrow(
                "SELECT count(*) FROM (SELECT 1 FROM tasks WHERE owner = $1 AND state IN ("
                + ", ".join(f"${n}" for n in range(3, 3 + len(_UNFINISHED)))
                + ") LIMIT $2) AS unfinished",
                owner,
                up_to,
                *_UNFINISHED,
            )
            return int(row[0]) if row is not None else 0

        return await self.database.read(count)

    async def list_tasks(self, query: TaskQuery) -> list[TaskSummary]:
        """The tasks ``query`` selects, newest first (by ``created_at``, then ``task_id``)."""
        conditions: list[str] = []
        args: list[object] = []

        def where(sql: str, *values: object) -> None:
            placeholders = [f"${len(args) + n}" for n in range(1, len(values) + 1)]
            conditions.append(sql.format(*placeholders))
            args.extend(values)

        if query.owner is not None:
            where("owner = {}", query.owner)
        if query.state is not None:
            where("state = {}", query.state)
        if query.kind is not None:
            where("kind = {}", query.kind)
        if query.since is not None:
            where("created_at >= {}", query.since)
        if query.before is not None:
            # A row value: both backends walk the index from the cursor, whatever the page.
            where("(created_at, task_id) < ({}, {})", *query.before)
        sql = (
            f"SELECT {_COLUMNS} FROM tasks"
            + (" WHERE " + " AND ".join(conditions) if conditions else "")
            + f" ORDER BY created_at DESC, task_id DESC LIMIT ${len(args) + 1}"
        )

        async def fetch(tx: Transaction) -> list[TaskSummary]:
            return [TaskSummary(*row) for row in await tx.fetch(sql, *args, query.limit)]

        return await self.database.read(fetch)

    async def events_after(self, task_id: str, after_seq: int, limit: int) -> list[StoredEvent]:
        async def after(tx: Transaction) -> list[StoredEvent]:
            rows = await tx.fetch(
                "SELECT seq, state, body FROM events"
                " WHERE task_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                task_id,
                after_seq,
                limit,
            )
            return [StoredEvent(task_id, seq, state, bytes(body)) for seq, state, body in rows]

        return await self.database.read(after)

    async def check_write(self) -> None:
        async def probe(tx: Transaction) -> None:
            await tx.execute(
                "INSERT INTO write_probe (id, checked_at) VALUES (1, $1)"
                " ON CONFLICT (id) DO UPDATE SET checked_at = excluded.checked_at",
                time.time(),
            )

        await self.database.write(probe)
