"""infra.database: one SQL interface; these cases hold for every backend, then PostgreSQL's own."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import sys
import tempfile
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
from infra.postgres_node import PostgresConfig, PostgresNode

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


async def test_an_integer_beyond_64_bits_is_an_integrity_violation(database: Database) -> None:
    async def add(tx: Transaction) -> None:
        await tx.execute("INSERT INTO items (name, qty) VALUES ($1, $2)", "huge", 2**63)

    with pytest.raises(IntegrityViolation):
        await database.write(add)
    assert await _count(database) == 0


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


# --- PostgreSQL only ------------------------------------------------------------------------

MIGRATING_PROCESS = """
import asyncio, sys
from infra.database import open_database

async def main():
    db = await open_database(sys.argv[1])
    print("ready", flush=True)
    sys.stdin.readline()  # "go": every process is connected by then
    try:
        await db.migrate("once", ["CREATE TABLE once (x BIGINT)", "INSERT INTO once VALUES (1)"])
    finally:
        await db.close()

asyncio.run(main())
"""


async def test_processes_that_migrate_one_postgres_together_apply_each_step_once(
    pg_url: str,
) -> None:
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            MIGRATING_PROCESS,
            pg_url,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(3)
    ]
    for process in processes:
        assert process.stdout is not None
        assert await process.stdout.readline() == b"ready\n"
    outputs = await asyncio.gather(*(p.communicate(b"go\n") for p in processes))
    for process, (_, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr.decode()
    database = await open_database(pg_url)
    try:

        async def state(tx: Transaction) -> tuple[int, int]:
            rows = await tx.fetchval("SELECT count(*) FROM once")
            version = await tx.fetchval(
                "SELECT version FROM schema_versions WHERE component = $1", "once"
            )
            return rows, version

        assert await database.read(state) == (1, 2)
    finally:
        await database.close()


@pytest.fixture
async def own_server() -> AsyncIterator[PostgresNode]:
    """A PostgreSQL server of the test's own, to kill."""
    base_dir = Path(tempfile.mkdtemp(prefix="taskgate-postgres-own-"))
    node = PostgresNode(PostgresConfig.on_free_port(base_dir))
    try:
        await asyncio.to_thread(node.start)
        yield node
    finally:
        await asyncio.to_thread(node.stop)
        shutil.rmtree(base_dir, ignore_errors=True)


async def _add(tx: Transaction, name: str) -> None:
    await tx.execute("INSERT INTO items (name, qty) VALUES ($1, $2)", name, 1)


async def test_a_killed_server_is_unavailable_until_it_is_back(own_server: PostgresNode) -> None:
    # A bound far beyond the test's timeout: the failures must come from the lost
    # connection, not from waiting the bound out.
    database = await open_database(own_server.url(), write_timeout_s=600)
    try:
        await database.migrate("items", [ITEMS])
        await database.write(lambda tx: _add(tx, "before"))
        await asyncio.to_thread(own_server.kill)

        with pytest.raises(DatabaseUnavailable, match=r"(?i)connect"):
            await database.write(lambda tx: _add(tx, "while down"))
        with pytest.raises(DatabaseUnavailable, match=r"(?i)connect"):
            await database.read(lambda tx: tx.fetchval("SELECT count(*) FROM items"))
        with pytest.raises(DatabaseUnavailable, match=r"(?i)connect"):
            await open_database(own_server.url(), write_timeout_s=600)

        await asyncio.to_thread(own_server.start)
        await database.write(lambda tx: _add(tx, "after"))  # the same pool, new connections

        async def names(tx: Transaction) -> list[str]:
            return [name for (name,) in await tx.fetch("SELECT name FROM items ORDER BY name")]

        assert await database.read(names) == ["after", "before"]
    finally:
        await database.close()


async def test_a_deadlocked_write_is_run_again(pg_url: str) -> None:
    database = await open_database(pg_url)
    try:
        await database.migrate("items", [ITEMS])
        await database.write(
            lambda tx: tx.executemany(
                "INSERT INTO items (name, qty) VALUES ($1, $2)", [("a", 0), ("b", 0)]
            )
        )
        locked = {"a": asyncio.Event(), "b": asyncio.Event()}
        runs = []

        def bump(first: str, second: str):  # type: ignore[no-untyped-def]
            async def fn(tx: Transaction) -> None:
                runs.append(first)
                await tx.execute("UPDATE items SET qty = qty + 1 WHERE name = $1", first)
                locked[first].set()
                # PostgreSQL lets a write wait on more than its transaction: here, for the
                # other write to hold its first row, so the two must deadlock.
                await locked[second].wait()
                await tx.execute("UPDATE items SET qty = qty + 1 WHERE name = $1", second)

            return fn

        await asyncio.gather(
            database.write(bump("a", "b"), timeout_s=30),
            database.write(bump("b", "a"), timeout_s=30),
        )
        # The deadlock's victim ran again (and may have deadlocked again, then run again).
        assert len(runs) > 2

        async def quantities(tx: Transaction) -> list[int]:
            return [qty for (qty,) in await tx.fetch("SELECT qty FROM items ORDER BY name")]

        assert await database.read(quantities) == [2, 2]  # each write counted once
    finally:
        await database.close()


@pytest.mark.parametrize(
    ("name", "qty"),
    [("too big", 2**63), ("nul\x00in text", 1)],
)
async def test_a_value_the_column_cannot_hold_is_an_integrity_violation(
    pg_url: str, name: str, qty: int
) -> None:
    database = await open_database(pg_url)
    try:
        await database.migrate("items", [ITEMS])

        async def add(tx: Transaction) -> None:
            await tx.execute("INSERT INTO items (name, qty) VALUES ($1, $2)", name, qty)

        with pytest.raises(IntegrityViolation):
            await database.write(add)
    finally:
        await database.close()
