"""The SQLite task store: one file in WAL mode, shared by every gateway process on a host.

Writes run on one dedicated thread (``infra.sqlite.SqliteThread``), so a
writer that waits for another process's lock never stalls the event loop.
Reads run on the event loop with a second connection: in WAL mode a reader
never waits for a writer, and a thread hop would cost more than the indexed query.

Every write is bounded by ``write_timeout_s``, its wait for the writer thread
and for another process's lock included; SQLite's "not now" errors (locked,
read-only, I/O, full) become ``StoreUnavailable``, with nothing written.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import astuple
from pathlib import Path
from typing import TypeVar

from infra.sqlite import DatabaseUnavailable, SqliteThread, connect, write_transaction
from workers.messages import StatusEvent

from .store import StoredEvent, StoreUnavailable, TaskSummary, apply_event

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    task_id    TEXT PRIMARY KEY,
    kind       TEXT NOT NULL,
    state      TEXT NOT NULL,
    attempt    INTEGER NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    last_seq   INTEGER NOT NULL,
    percent    REAL,
    message    TEXT,
    result     TEXT,
    error      TEXT,
    owner      TEXT
);
CREATE TABLE IF NOT EXISTS events (
    task_id  TEXT NOT NULL,
    seq      INTEGER NOT NULL,
    event_id TEXT NOT NULL UNIQUE,
    state    TEXT NOT NULL,
    body     BLOB NOT NULL,
    PRIMARY KEY (task_id, seq)
) WITHOUT ROWID;
-- One row that the readiness check rewrites: only a commit proves the store takes writes.
CREATE TABLE IF NOT EXISTS write_probe (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    checked_at REAL NOT NULL
);
"""

# In the order of TaskSummary's fields.
_SUMMARY_COLUMNS = (
    "task_id, kind, state, attempt, created_at, updated_at, last_seq,"
    " percent, message, result, error, owner"
)


def _create_schema(conn: sqlite3.Connection) -> None:
    conn.executescript(SCHEMA)
    columns = {row[1] for row in conn.execute("PRAGMA table_info(tasks)")}
    if "owner" not in columns:  # a database from before tasks had owners
        conn.execute("ALTER TABLE tasks ADD COLUMN owner TEXT")


def _summary(row: tuple[object, ...] | None) -> TaskSummary | None:
    return None if row is None else TaskSummary(*row)  # type: ignore[arg-type]


class SqliteTaskStore:
    """``TaskStore`` on a SQLite file; create with ``await SqliteTaskStore.open(path)``."""

    def __init__(self, path: Path, *, write_timeout_s: float = 2.0) -> None:
        self._writer = SqliteThread(path, name="task-store")
        self._reader: sqlite3.Connection | None = None
        self._write_timeout_s = write_timeout_s

    @classmethod
    async def open(cls, path: Path, *, write_timeout_s: float = 2.0) -> SqliteTaskStore:
        store = cls(path, write_timeout_s=write_timeout_s)
        try:
            await store._writer.run(_create_schema)
            store._reader = connect(path)
            store._reader.execute("PRAGMA query_only=ON")
        except BaseException:
            await store.close()  # no connection left for the garbage collector to find
            raise
        return store

    async def close(self) -> None:
        await self._writer.close()
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    async def record(
        self, events: Sequence[tuple[StatusEvent, bytes]], *, owner: str | None = None
    ) -> list[StoredEvent]:
        return await self._write(lambda conn: self._record(conn, events, owner))

    async def discard_task(self, task_id: str) -> None:
        def discard(conn: sqlite3.Connection) -> None:
            with write_transaction(conn):
                conn.execute("DELETE FROM events WHERE task_id = ?", (task_id,))
                conn.execute("DELETE FROM tasks WHERE task_id = ?", (task_id,))

        await self._write(discard)

    async def get_task(self, task_id: str) -> TaskSummary | None:
        row = self._read().execute(
            f"SELECT {_SUMMARY_COLUMNS} FROM tasks WHERE task_id = ?", (task_id,)
        )
        return _summary(row.fetchone())

    async def events_after(self, task_id: str, after_seq: int, limit: int) -> list[StoredEvent]:
        rows = self._read().execute(
            "SELECT seq, state, body FROM events"
            " WHERE task_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            (task_id, after_seq, limit),
        )
        return [StoredEvent(task_id, seq, state, body) for seq, state, body in rows]

    async def check_write(self) -> None:
        def probe(conn: sqlite3.Connection) -> None:
            with write_transaction(conn):
                conn.execute(
                    "INSERT OR REPLACE INTO write_probe (id, checked_at) VALUES (1, ?)",
                    (time.time(),),
                )

        await self._write(probe)

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn(connection)`` on the writer thread within the bound, or StoreUnavailable."""
        try:
            return await self._writer.write(fn, timeout_s=self._write_timeout_s)
        except DatabaseUnavailable as exc:
            raise StoreUnavailable(f"the task store cannot take a write now: {exc}") from exc

    def _read(self) -> sqlite3.Connection:
        if self._reader is None:
            raise sqlite3.ProgrammingError("the store is closed")
        return self._reader

    @staticmethod
    def _record(
        conn: sqlite3.Connection, events: Sequence[tuple[StatusEvent, bytes]], owner: str | None
    ) -> list[StoredEvent]:
        stored = []
        with write_transaction(conn):
            for event, body in events:
                seen = conn.execute(
                    "SELECT seq, state, body FROM events WHERE event_id = ?", (event.event_id,)
                ).fetchone()
                if seen is not None:
                    stored.append(StoredEvent(event.task_id, *seen))
                    continue
                row = conn.execute(
                    f"SELECT {_SUMMARY_COLUMNS} FROM tasks WHERE task_id = ?", (event.task_id,)
                ).fetchone()
                summary = apply_event(_summary(row), event, owner=owner)
                conn.execute(
                    f"INSERT OR REPLACE INTO tasks ({_SUMMARY_COLUMNS}) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    astuple(summary),
                )
                conn.execute(
                    "INSERT INTO events (task_id, seq, event_id, state, body)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (event.task_id, summary.last_seq, event.event_id, event.state, body),
                )
                stored.append(StoredEvent(event.task_id, summary.last_seq, event.state, body))
        return stored
