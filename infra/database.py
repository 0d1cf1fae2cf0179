"""One SQL interface over SQLite (the embedded default) and PostgreSQL (``DATABASE_URL``).

Stores write their SQL once, for both: PostgreSQL's ``$1, $2…`` placeholders
(the SQLite backend rewrites them), ``INSERT … ON CONFLICT``, ``RETURNING``,
and the types TEXT, BIGINT, DOUBLE PRECISION and BYTEA. A migration that
cannot be written once is a mapping from dialect to SQL.

A write is a function of one ``Transaction``, committed when it returns and
rolled back when it raises. It may await only its transaction's methods: the
SQLite backend runs it to completion on its writer thread, so a function that
waited on anything else would hold the database's one write lock across it.

Errors are translated at this boundary: ``DatabaseUnavailable`` means "not
now" (locked beyond the bound, read-only, I/O, full, unreachable): nothing was
written, try again later. ``IntegrityViolation`` means the data broke a
constraint.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

T = TypeVar("T")

Dialect = Literal["sqlite", "postgresql"]
# A row: indexable and unpackable (a tuple from SQLite, an asyncpg Record from PostgreSQL).
Row = Sequence[Any]


class DatabaseError(Exception):
    """The database failed."""


class DatabaseUnavailable(DatabaseError):
    """The database cannot take a write now (locked, read-only, I/O, full, unreachable); retry."""


class IntegrityViolation(DatabaseError):
    """A write broke a unique, foreign-key or check constraint."""


class Transaction(Protocol):
    """One open transaction; SQL with ``$n`` placeholders."""

    async def execute(self, sql: str, *args: object) -> int:
        """Run one statement; the number of rows it changed."""
        ...

    async def executemany(self, sql: str, rows: Iterable[Sequence[object]]) -> None: ...

    async def fetch(self, sql: str, *args: object) -> list[Row]: ...

    async def fetchrow(self, sql: str, *args: object) -> Row | None: ...

    async def fetchval(self, sql: str, *args: object) -> Any:
        """The first column of the first row, or None."""
        ...


Work = Callable[[Transaction], Awaitable[T]]
# A schema step: SQL for both dialects (statements separated by ';'), SQL per dialect,
# or a function of a transaction for data work.
Migration = str | Mapping[str, str] | Callable[[Transaction], Awaitable[None]]


class Database(Protocol):
    """A SQLite file or a PostgreSQL database; open with ``open_database``."""

    dialect: Dialect

    async def write(self, fn: Work[T], *, timeout_s: float | None = None) -> T:
        """``fn`` in one write transaction within ``timeout_s`` (default: the database's bound).

        Raises DatabaseUnavailable, with nothing written, when it cannot commit in time.
        """
        ...

    async def read(self, fn: Work[T]) -> T:
        """``fn`` on a read-only view."""
        ...

    async def migrate(self, component: str, steps: Sequence[Migration]) -> None:
        """Apply the steps of ``component`` it has not applied yet, each in its own transaction.

        The version reached is kept in ``schema_versions``. Steps are only ever
        appended: a released step never changes. Safe when processes start together.
        """
        ...

    async def close(self) -> None: ...


SCHEMA_VERSIONS = (
    "CREATE TABLE IF NOT EXISTS schema_versions"
    " (component TEXT PRIMARY KEY, version BIGINT NOT NULL)"
)


async def apply_migrations(
    tx: Transaction, dialect: Dialect, component: str, steps: Sequence[Migration]
) -> None:
    """The part of ``migrate`` both backends share; the caller holds the migration lock."""
    await tx.execute(SCHEMA_VERSIONS)
    version = await tx.fetchval(
        "SELECT version FROM schema_versions WHERE component = $1", component
    )
    done = int(version or 0)
    for number, step in enumerate(steps[done:], start=done + 1):
        if callable(step):
            await step(tx)
        else:
            sql = step if isinstance(step, str) else step[dialect]
            for statement in split_statements(sql):
                await tx.execute(statement)
        await tx.execute(
            "INSERT INTO schema_versions (component, version) VALUES ($1, $2)"
            " ON CONFLICT (component) DO UPDATE SET version = excluded.version",
            component,
            number,
        )


def split_statements(sql: str) -> list[str]:
    """The statements of a script separated by ';' (schema scripts hold no ';' in strings)."""
    return [part.strip() for part in sql.split(";") if part.strip()]


async def open_database(
    url: str | Path, *, write_timeout_s: float = 2.0, pool_size: int = 10
) -> Database:
    """The database ``url`` names: ``postgresql://…`` (or ``postgres://``), ``sqlite:///abs``,
    ``sqlite:relative`` or a bare path of a SQLite file."""
    text = str(url)
    if text.startswith(("postgresql://", "postgres://")):
        from .postgresql import PostgresDatabase

        return await PostgresDatabase.open(
            text, write_timeout_s=write_timeout_s, pool_size=pool_size
        )
    from .sqlite import SqliteDatabase

    return await SqliteDatabase.open(sqlite_path(text), write_timeout_s=write_timeout_s)


def sqlite_path(url: str) -> Path:
    """The file of a ``sqlite:`` URL or a bare path."""
    if url.startswith("sqlite://"):
        return Path(url.removeprefix("sqlite://"))
    if url.startswith("sqlite:"):
        return Path(url.removeprefix("sqlite:"))
    if "://" in url:
        raise ValueError(f"unknown database URL scheme in {url.split('://')[0]!r}:// ")
    return Path(url)


def redact(url: str | Path) -> str:
    """``url`` without its password, for logs."""
    text = str(url)
    if "://" not in text or "@" not in text:
        return text
    scheme, rest = text.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"
