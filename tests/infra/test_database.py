"""infra.database: one SQL interface; these cases hold for every backend."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from infra.database import (
    Database,
    DatabaseUnavailable,
    IntegrityViolation,
    Transaction,
    open_database,
    redact,
    sqlite_path,
)

ITEMS = "CREATE TABLE items (name TEXT PRIMARY KEY, qty BIGINT NOT NULL, data BYTEA)"


@pytest.fixture
async def database(database: Database) -> AsyncIterator[Database]:
    """The shared fresh database (tests/conftest.py), with a table of items."""
    await database.migrate("items", [ITEMS])
    yield database


async def _count(db: Database) -> int:
    async def count(tx: Transaction) -> int:
        return int(await tx.fetchval("SELECT count(*) FROM items"))

    return await db.read(count)


async def test_a_write_commits_when_its_function_returns(database: Database) -> None:
    async def add(tx: Transaction) -> list[object]:
        await tx.execute(
            "INSERT INTO items (name, qty, data) VALUES ($1, $2, $3)", "mug", 2, b"\x00\xff"
        )
        # $n may repeat and come in any order.
        row = await tx.fetchrow(
            "SELECT qty, data FROM items WHERE name = $2 AND qty = $1", 2, "mug"
        )
        assert row is not None
        return list(row)

    assert await database.write(add) == [2, b"\x00\xff"]
    assert await _count(database) == 1


async def test_a_write_that_raises_leaves_nothing(database: Database) -> None:
    async def add_then_fail(tx: Transaction) -> None:
        await tx.execute("INSERT INTO items (name, qty) VALUES ($1, $2)", "mug", 1)
        raise ValueError("changed my mind")

    with pytest.raises(ValueError):
        await database.write(add_then_fail)
    assert await _count(database) == 0


async def test_upserts_and_returning_are_portable(database: Database) -> None:
    async def upsert(tx: Transaction) -> list[int]:
        got = []
        for qty in (1, 5):
            got.append(
                await tx.fetchval(
                    "INSERT INTO items (name, qty) VALUES ($1, $2)"
                    " ON CONFLICT (name) DO UPDATE SET qty = items.qty + excluded.qty"
                    " RETURNING qty",
                    "mug",
                    qty,
                )
            )
        await tx.executemany(
            "INSERT INTO items (name, qty) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
            [("tee", 1), ("mug", 100)],
        )
        return got

    assert await database.write(upsert) == [1, 6]

    async def rows(tx: Transaction) -> list[tuple[str, int]]:
        return [
            (name, qty)
            for name, qty in await tx.fetch(
                "SELECT name, qty FROM items WHERE qty > $1 ORDER BY name FOR UPDATE", 0
            )
        ]

    assert await database.write(rows) == [("mug", 6), ("tee", 1)]


async def test_a_broken_constraint_is_an_integrity_violation(database: Database) -> None:
    async def add(tx: Transaction) -> None:
        await tx.execute("INSERT INTO items (name, qty) VALUES ($1, $2)", "mug", 1)

    await database.write(add)
    with pytest.raises(IntegrityViolation):
        await database.write(add)
    assert await _count(database) == 1


async def test_migrations_apply_each_step_once_and_only_new_ones_later(
    database: Database,
) -> None:
    calls = []

    async def seed(tx: Transaction) -> None:
        calls.append("seed")
        await tx.execute("INSERT INTO items (name, qty) VALUES ($1, $2)", "seeded", 1)

    steps = [
        "CREATE TABLE a (x BIGINT); CREATE TABLE b (y TEXT)",
        {"sqlite": "CREATE TABLE c (z BLOB)", "postgresql": "CREATE TABLE c (z BYTEA)"},
        seed,
    ]
    await database.migrate("demo", steps[:2])
    await database.migrate("demo", steps[:2])
    await database.migrate("demo", steps)
    await database.migrate("demo", steps)
    assert calls == ["seed"]

    async def versions(tx: Transaction) -> dict[str, int]:
        return {c: v for c, v in await tx.fetch("SELECT component, version FROM schema_versions")}

    assert await database.read(versions) == {"items": 1, "demo": 3}


async def test_processes_that_migrate_together_apply_each_step_once(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    databases = [await open_database(path) for _ in range(3)]
    try:
        steps = ["CREATE TABLE once (x BIGINT)"]  # a second CREATE TABLE would fail
        await asyncio.gather(*(db.migrate("once", steps) for db in databases))
    finally:
        for db in databases:
            await db.close()


async def test_a_transaction_function_may_not_wait_on_anything_else(database: Database) -> None:
    if database.dialect != "sqlite":
        pytest.skip("only SQLite runs transaction functions on its writer thread")

    async def waits(tx: Transaction) -> None:
        await tx.execute("INSERT INTO items (name, qty) VALUES ($1, $2)", "mug", 1)
        await asyncio.sleep(0)

    with pytest.raises(RuntimeError, match="may await only its transaction"):
        await database.write(waits)
    assert await _count(database) == 0


async def test_a_write_lock_held_beyond_the_bound_is_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    database = await open_database(path, write_timeout_s=0.2)
    other = sqlite3.connect(path, isolation_level=None)
    try:
        await database.migrate("items", [ITEMS])
        other.execute("BEGIN IMMEDIATE")

        async def add(tx: Transaction) -> None:
            await tx.execute("INSERT INTO items (name, qty) VALUES ($1, $2)", "mug", 1)

        with pytest.raises(DatabaseUnavailable):
            await database.write(add)
        other.execute("ROLLBACK")
        await database.write(add)  # and it recovers once the lock is gone
        assert await _count(database) == 1
    finally:
        other.close()
        await database.close()


def test_urls_name_a_backend_and_hide_passwords() -> None:
    assert sqlite_path("sqlite:///var/x.db") == Path("/var/x.db")
    assert sqlite_path("sqlite:var/x.db") == Path("var/x.db")
    assert sqlite_path("var/x.db") == Path("var/x.db")
    with pytest.raises(ValueError, match="mysql"):
        sqlite_path("mysql://u@h/db")
    assert redact("postgresql://tg:s3cret@db:5432/tg") == "postgresql://tg:***@db:5432/tg"
    assert redact("var/x.db") == "var/x.db"
