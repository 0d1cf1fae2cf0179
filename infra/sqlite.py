"""SQLite as the project uses it: WAL files shared by processes, one connection per thread.

``SqliteDatabase`` is the embedded backend of ``infra.database.Database``.

A ``SqliteThread`` owns one connection and runs every call on its own thread,
so a call that waits for another process's write lock never stalls an event
loop. Write transactions take the lock up front (``BEGIN IMMEDIATE``): two
processes that both read first and then write would otherwise fail one of them
with "database is locked".

``SqliteThread.write`` bounds a write (its wait for the thread and for another
process's lock included) and turns SQLite's "not now" errors into
``DatabaseUnavailable``, with nothing written.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from .database import DatabaseUnavailable as DatabaseUnavailable
from .database import (
    Dialect,
    IntegrityViolation,
    Migration,
    Row,
    Work,
    apply_migrations,
)

T = TypeVar("T")

# SQLite's primary result codes that mean "not now" rather than "wrong": the write lock
# is held (BUSY, LOCKED), the file is read-only, cannot be opened, or the disk failed or is full.
_UNAVAILABLE_CODES = frozenset(
    {
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_CANTOPEN,
    }
)


def unavailable(exc: sqlite3.Error) -> DatabaseUnavailable | None:
    """The DatabaseUnavailable that ``exc`` means, if it means one."""
    # Errors of Python's own (a closed connection) carry no code.
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and code & 0xFF in _UNAVAILABLE_CODES:  # an extended code's primary part
        return DatabaseUnavailable(f"the database cannot take a write now: {exc}")
    return None


def connect(path: Path) -> sqlite3.Connection:
    """A connection in WAL mode with explicit transactions (see ``write_transaction``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10.0)
    try:
        _enable_wal(conn)
        # Durable against a process crash; a power cut may lose the last commits.
        conn.execute("PRAGMA synchronous=NORMAL")
    except BaseException:
        conn.close()
        raise
    return conn


def _enable_wal(conn: sqlite3.Connection, attempts: int = 50) -> None:
    """Switch to WAL, waiting out other processes doing the same to a new file.

    Changing the journal mode answers "database is locked" at once, without the
    busy timeout, while another connection is switching it (two gateways starting
    together on a fresh file); it is a start-up step, so a short pause is fine.
    """
    for attempt in range(attempts):
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.02 * (attempt + 1))


@contextlib.contextmanager
def write_transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


class SqliteThread:
    """One connection to ``path``, used from one dedicated thread."""

    def __init__(self, path: Path, *, name: str) -> None:
        self._path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._conn: sqlite3.Connection | None = None

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """``fn(connection, *args)`` on the thread."""

        def call() -> T:
            if self._conn is None:
                self._conn = connect(self._path)
            return fn(self._conn, *args)

        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def write(self, fn: Callable[[sqlite3.Connection], T], *, timeout_s: float) -> T:
        """``fn(connection)`` on the thread within ``timeout_s``, or DatabaseUnavailable."""
        deadline = time.monotonic() + timeout_s

        def bounded(conn: sqlite3.Connection) -> T:
            # Writes queue for the one thread; each waits its turn there and then for the
            # lock, and the bound covers both, so a held lock answers every queued write
            # within the bound rather than one bound after another.
            remaining_s = deadline - time.monotonic()
            if remaining_s <= 0:
                raise DatabaseUnavailable(f"the database did not take a write within {timeout_s} s")
            conn.execute(f"PRAGMA busy_timeout = {int(remaining_s * 1000)}")
            try:
                return fn(conn)
            except sqlite3.Error:
                # A failed COMMIT may leave the transaction open; the next write must not
                # find it half done.
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise

        try:
            return await self.run(bounded)
        except sqlite3.Error as exc:
            translated = unavailable(exc)
            if translated is None:
                raise
            raise translated from exc

    async def close(self) -> None:
        def close(conn: sqlite3.Connection) -> None:
            conn.close()

        if self._conn is not None:
            await self.run(close)
            self._conn = None
        self._executor.shutdown(wait=True)


class SqliteDatabase:
    """``infra.database.Database`` on a SQLite file; open with ``await SqliteDatabase.open(path)``.

    Writes run on one thread, one transaction at a time, each holding SQLite's
    write lock from its start (other processes on the file wait up to the
    bound). Reads run on the event loop on a second, read-only connection: in
    WAL mode a reader never waits for a writer, and a thread hop would cost more
    than an indexed query.
    """

    dialect: Dialect = "sqlite"

    def __init__(self, path: Path, *, write_timeout_s: float = 2.0) -> None:
        self.path = path
        self._writer = SqliteThread(path, name=f"sqlite-{path.stem}")
        self._reader: sqlite3.Connection | None = None
        self._write_timeout_s = write_timeout_s

    @classmethod
    async def open(cls, path: Path, *, write_timeout_s: float = 2.0) -> SqliteDatabase:
        database = cls(path, write_timeout_s=write_timeout_s)
        try:
            await database._writer.run(lambda conn: None)  # creates the file in WAL mode
            database._reader = connect(path)
            database._reader.execute("PRAGMA query_only=ON")
        except BaseException:
            await database.close()  # no connection left for the garbage collector to find
            raise
        return database

    async def write(self, fn: Work[T], *, timeout_s: float | None = None) -> T:
        def transact(conn: sqlite3.Connection) -> T:
            with write_transaction(conn):
                return run_to_end(fn(SqliteTransaction(conn)))

        try:
            return await self._writer.write(transact, timeout_s=timeout_s or self._write_timeout_s)
        except (sqlite3.IntegrityError, OverflowError) as exc:
            # OverflowError: an integer beyond 64 bits, which PostgreSQL refuses as data too.
            raise IntegrityViolation(str(exc)) from exc

    async def read(self, fn: Work[T]) -> T:
        if self._reader is None:
            raise sqlite3.ProgrammingError("the database is closed")
        # One snapshot for every statement of ``fn``.
        self._reader.execute("BEGIN")
        try:
            return run_to_end(fn(SqliteTransaction(self._reader)))
        finally:
            self._reader.execute("COMMIT")

    async def migrate(self, component: str, steps: Sequence[Migration]) -> None:
        await self.write(
            lambda tx: apply_migrations(tx, self.dialect, component, steps),
            timeout_s=max(self._write_timeout_s, 30.0),  # another process may be migrating
        )

    async def close(self) -> None:
        await self._writer.close()
        if self._reader is not None:
            self._reader.close()
            self._reader = None


class SqliteTransaction:
    """``infra.database.Transaction`` on a connection; every method completes without waiting."""

    __slots__ = ("_conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, *args: object) -> int:
        return self._conn.execute(_sqlite_sql(sql), args).rowcount

    async def executemany(self, sql: str, rows: Iterable[Sequence[object]]) -> None:
        self._conn.executemany(_sqlite_sql(sql), rows)

    async def fetch(self, sql: str, *args: object) -> list[Row]:
        return self._conn.execute(_sqlite_sql(sql), args).fetchall()

    async def fetchrow(self, sql: str, *args: object) -> Row | None:
        row: Row | None = self._conn.execute(_sqlite_sql(sql), args).fetchone()
        return row

    async def fetchval(self, sql: str, *args: object) -> Any:
        row = self._conn.execute(_sqlite_sql(sql), args).fetchone()
        return None if row is None else row[0]


def run_to_end(awaitable: Awaitable[T]) -> T:
    """The result of ``awaitable``, which must finish without suspending.

    A transaction function awaits only SQLite calls, which never suspend, so it
    can run to its end on the writer thread without an event loop.
    """
    steps = awaitable.__await__()
    try:
        steps.send(None)
    except StopIteration as finished:
        return finished.value  # type: ignore[no-any-return]
    steps.close()
    raise RuntimeError("a database transaction function may await only its transaction")


_PLACEHOLDER = re.compile(r"\$(\d+)")


@functools.lru_cache(maxsize=512)
def _sqlite_sql(sql: str) -> str:
    """PostgreSQL's ``$n`` as SQLite's ``?n``; row locks dropped (a write holds the one lock)."""
    return _PLACEHOLDER.sub(r"?\1", sql).replace(" FOR UPDATE", "")
