"""SQLite as the project uses it: WAL files shared by processes, one connection per thread.

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
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

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


class DatabaseUnavailable(Exception):
    """The database cannot take a write now: read-only, locked beyond the bound, I/O, full."""


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
