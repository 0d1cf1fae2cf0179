"""``infra.database.Database`` on PostgreSQL, through asyncpg and its connection pool.

asyncpg was chosen over psycopg 3 on the recorder's workload (bench/store_drivers.py,
docs/benchmarks.md): more events per second at half the client CPU per event.

Every wait is bounded: a write (its wait for a pooled connection, its
statements, its commit) by ``timeout_s``, a read by ``READ_TIMEOUT_S``, and the
server gives up a lock wait after the write bound too (``lock_timeout``), so a
write stuck behind another session's row lock rolls back on the server rather
than holding its connection on. What cannot be done now becomes
``DatabaseUnavailable``: the server refused or lost the connection, is
shutting down, read-only, out of connections or disk, or the bound passed. A
bound that strikes during COMMIT itself leaves the outcome unknown, as any
lost connection does: writes are made idempotent by their keys for that.

A write whose transaction loses a serialization conflict (40001) or a deadlock
(40P01) is run again, its function included, until its bound.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

import asyncpg
from asyncpg.exceptions import _base as asyncpg_base

from .database import (
    DatabaseError,
    DatabaseUnavailable,
    Dialect,
    IntegrityViolation,
    Migration,
    Row,
    Transaction,
    Work,
    apply_migrations,
    redact,
)

T = TypeVar("T")

READ_TIMEOUT_S = 30.0
# Migrations may wait for another process's migrations (the advisory lock) and run DDL.
MIGRATE_TIMEOUT_S = 60.0
# One lock for every component's migrations: two processes creating schema_versions (or
# any table) at once would otherwise collide in the catalog. The key is "taskgate" in ASCII.
MIGRATION_LOCK_KEY = int.from_bytes(b"taskgate", "big")
_RETRY_PAUSE_S = 0.01

# Errors that mean "not now": the connection (class 08), the server's resources (53:
# disk full, out of memory, too many connections), an operator or a crash (57: shutdown,
# cannot connect now, statement cancelled), a lock not granted within lock_timeout, a
# read-only server (25006, a hot standby), an idle-in-transaction session ended (25P03).
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InsufficientResourcesError,
    asyncpg.OperatorInterventionError,
    asyncpg.LockNotAvailableError,
    asyncpg.ReadOnlySQLTransactionError,
    asyncpg.IdleInTransactionSessionTimeoutError,
)
# The input's fault: a constraint (class 23), or a value the column cannot hold (class
# 22 on the server, e.g. NUL in text; asyncpg's own DataError, e.g. an int beyond BIGINT).
_INTEGRITY: tuple[type[BaseException], ...] = (
    asyncpg.IntegrityConstraintViolationError,
    asyncpg.DataError,
    asyncpg_base.DataError,
)
_RETRY: tuple[type[BaseException], ...] = (
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
)


def translate(exc: BaseException, conn: asyncpg.Connection | None = None) -> DatabaseError | None:
    """The DatabaseError that ``exc`` means, if it means one."""
    if isinstance(exc, _INTEGRITY):
        return IntegrityViolation(str(exc))
    if isinstance(exc, _UNAVAILABLE):
        return DatabaseUnavailable(f"PostgreSQL cannot take this now: {exc!r}")
    # A connection whose socket closed, or whose protocol state broke under a killed server
    # (InternalClientError), or the pool itself (conn None: closing, or no connection).
    if isinstance(exc, asyncpg_base.InternalClientError) or (
        isinstance(exc, asyncpg.InterfaceError) and (conn is None or conn.is_closed())
    ):
        return DatabaseUnavailable(f"the connection to PostgreSQL was lost: {exc}")
    return None


class PostgresDatabase:
    """A PostgreSQL database; open with ``await PostgresDatabase.open(url)``."""

    dialect: Dialect = "postgresql"

    def __init__(self, pool: asyncpg.Pool, url: str, *, write_timeout_s: float) -> None:
        self._pool = pool
        self.url = redact(url)
        self._write_timeout_s = write_timeout_s

    def __repr__(self) -> str:
        return f"PostgresDatabase({self.url!r})"

    @classmethod
    async def open(
        cls, url: str, *, write_timeout_s: float = 2.0, pool_size: int = 10
    ) -> PostgresDatabase:
        """A pool of up to ``pool_size`` connections to ``url``; one is made now, to try it.

        Raises DatabaseUnavailable if the server cannot be reached within the write
        bound, and asyncpg's own error for a refused login or an unknown database.
        """
        lock_timeout_ms = max(1, int(write_timeout_s * 1000))
        pool: asyncpg.Pool | None = None
        try:
            pool = await asyncpg.create_pool(
                url,
                # Connections are made on demand and kept while used (asyncpg's floor keeper
                # would log a traceback every few seconds while the server is down).
                min_size=0,
                max_size=pool_size,
                timeout=write_timeout_s,  # per connection attempt
                server_settings={
                    "application_name": "taskgate",
                    "lock_timeout": str(lock_timeout_ms),
                    # A session that left a transaction open (a client frozen mid-write)
                    # must not hold its row locks for good.
                    "idle_in_transaction_session_timeout": str(max(lock_timeout_ms, 60_000)),
                },
            )
            # A wrong password or database name shows now, not at the first write.
            async with pool.acquire() as conn:
                await conn.fetchval("SELECT 1")
        except Exception as exc:
            if pool is not None:
                pool.terminate()
            translated = translate(exc)
            if isinstance(translated, DatabaseUnavailable):
                raise translated from exc
            raise
        return cls(pool, url, write_timeout_s=write_timeout_s)

    async def write(self, fn: Work[T], *, timeout_s: float | None = None) -> T:
        bound_s = timeout_s or self._write_timeout_s
        deadline = time.monotonic() + bound_s
        while True:
            try:
                async with asyncio.timeout_at(_loop_deadline(deadline)):
                    return await self._transact(fn, readonly=False)
            except _RETRY:
                if time.monotonic() + _RETRY_PAUSE_S >= deadline:
                    raise DatabaseUnavailable(
                        f"a write kept conflicting with others for {bound_s:g} s"
                    ) from None
                await asyncio.sleep(_RETRY_PAUSE_S)
            except TimeoutError:
                raise DatabaseUnavailable(
                    f"PostgreSQL did not complete a write within {bound_s:g} s"
                ) from None

    async def read(self, fn: Work[T]) -> T:
        try:
            async with asyncio.timeout(READ_TIMEOUT_S):
                return await self._transact(fn, readonly=True)
        except TimeoutError:
            raise DatabaseUnavailable(
                f"PostgreSQL did not complete a read within {READ_TIMEOUT_S:g} s"
            ) from None

    async def _transact(self, fn: Work[T], *, readonly: bool) -> T:
        """``fn`` in one transaction on a pooled connection, errors translated."""
        try:
            async with self._pool.acquire() as conn:
                # A read sees one snapshot across its statements, as SQLite's reads do.
                isolation = "repeatable_read" if readonly else "read_committed"
                try:
                    async with conn.transaction(isolation=isolation, readonly=readonly):
                        return await fn(PgTransaction(conn))
                except Exception as exc:
                    # Translated while the connection is ours: once back in the pool it
                    # cannot be asked whether it is closed.
                    translated = translate(exc, conn)
                    if isinstance(exc, asyncpg_base.InternalClientError):
                        # Its protocol state broke (seen when the server was killed under
                        # it): the pool must make a new one, not hand this one out again.
                        conn.terminate()
                    if translated is None:
                        raise
                    raise translated from exc
        except DatabaseError:
            raise
        except Exception as exc:  # from the pool: no connection to be had, or its release
            translated = translate(exc)
            if translated is None:
                raise
            raise translated from exc

    async def migrate(self, component: str, steps: Sequence[Migration]) -> None:
        async def locked(tx: Transaction) -> None:
            # Held to the transaction's end: a process starting beside us waits (longer
            # than a write's lock_timeout), then finds the steps applied.
            await tx.execute(f"SET LOCAL lock_timeout = {int(MIGRATE_TIMEOUT_S * 1000)}")
            await tx.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_KEY)
            await apply_migrations(tx, self.dialect, component, steps)

        await self.write(locked, timeout_s=max(self._write_timeout_s, MIGRATE_TIMEOUT_S))

    async def close(self) -> None:
        """Close the pool; connections still in use are ended after a short wait."""
        try:
            async with asyncio.timeout(5):
                await self._pool.close()
        except TimeoutError:
            self._pool.terminate()


def _loop_deadline(deadline: float) -> float:
    """``deadline`` (time.monotonic) on the running loop's clock."""
    loop = asyncio.get_running_loop()
    return loop.time() + (deadline - time.monotonic())


class PgTransaction:
    """``infra.database.Transaction`` on an asyncpg connection inside a transaction."""

    __slots__ = ("_conn",)

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, *args: object) -> int:
        status: str = await self._conn.execute(sql, *args)
        # "INSERT 0 1", "UPDATE 3", "DELETE 0", "SELECT 1"; "CREATE TABLE" changed no row.
        count = status.rpartition(" ")[2]
        return int(count) if count.isdigit() else 0

    async def executemany(self, sql: str, rows: Iterable[Sequence[object]]) -> None:
        await self._conn.executemany(sql, rows)

    async def fetch(self, sql: str, *args: object) -> list[Row]:
        return list(await self._conn.fetch(sql, *args))

    async def fetchrow(self, sql: str, *args: object) -> Row | None:
        row: Row | None = await self._conn.fetchrow(sql, *args)
        return row

    async def fetchval(self, sql: str, *args: object) -> Any:
        return await self._conn.fetchval(sql, *args)
