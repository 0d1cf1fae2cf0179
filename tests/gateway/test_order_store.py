"""The order store and the upload keys on infra.database; an existing SQLite file is adopted."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

import pytest

from gateway.idempotency import UPLOAD_KEY_MIGRATIONS, IdempotencyConflict, claim_upload_key
from gateway.order_store import OrderStore, StoredOrder, insert_order
from infra.database import open_database

# The schema (and data) gateway/order_store.py wrote before it moved to infra.database.
OLD_SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    order_id TEXT PRIMARY KEY, idempotency_key TEXT UNIQUE, request_hash TEXT,
    body BLOB NOT NULL, created_at REAL NOT NULL, owner TEXT
);
"""


async def test_an_existing_sqlite_file_is_adopted_with_its_orders_and_keys(tmp_path: Path):
    path = tmp_path / "taskgate.db"
    with contextlib.closing(sqlite3.connect(path)) as old:
        old.executescript(OLD_SCHEMA)
        old.execute(
            "INSERT INTO orders VALUES (?, ?, ?, ?, ?, ?)",
            ("o-1", "ada\x1fk-1", "hash-1", b'{"order_id": "o-1"}', 1.0, "ada"),
        )
        old.commit()

    database = await open_database(path)
    try:
        orders = await OrderStore.open(database)
        await OrderStore.open(database)  # a second start changes nothing
        assert await orders.get_order("o-1") == StoredOrder(b'{"order_id": "o-1"}', "ada")
        assert await orders.order_for_key("ada", "k-1", "hash-1") == b'{"order_id": "o-1"}'
        assert await orders.order_for_key("bob", "k-1", "hash-1") is None
        with pytest.raises(IdempotencyConflict):
            await orders.order_for_key("ada", "k-1", "another hash")

        async def retry(tx):
            return await insert_order(
                tx, b"{}", "o-2", owner="ada", idempotency_key="k-1", request_hash="hash-1"
            )

        async def new(tx):
            return await insert_order(
                tx, b"{}", "o-3", owner="ada", idempotency_key=None, request_hash="hash-3"
            )

        assert await database.write(retry) == (b'{"order_id": "o-1"}', False)
        assert await database.write(new) == (b"{}", True)
        assert await orders.get_order("o-2") is None
        version = await database.read(
            lambda tx: tx.fetchval("SELECT version FROM schema_versions WHERE component = 'orders'")
        )
        assert version == 1
    finally:
        await database.close()


async def test_concurrent_first_uses_of_a_key_make_one_order_and_one_task(database):
    await OrderStore.open(database)
    await database.migrate("upload_keys", UPLOAD_KEY_MIGRATIONS)

    def order(order_id: str, request_hash: str = "h"):
        async def write(tx):
            return await insert_order(
                tx,
                order_id.encode(),
                order_id,
                owner="ada",
                idempotency_key="k",
                request_hash=request_hash,
            )

        return write

    def upload(task_id: str, request_hash: str = "h"):
        return lambda tx: claim_upload_key(tx, "ada", "k", request_hash, task_id)

    orders = await asyncio.gather(*(database.write(order(f"o-{n}")) for n in range(5)))
    uploads = await asyncio.gather(*(database.write(upload(f"t-{n}")) for n in range(5)))

    created = [body for body, new in orders if new]
    assert len(created) == 1
    assert {body for body, _ in orders} == set(created)
    assert uploads.count(None) == 1  # the first binds the key; the others get its task
    assert len({task for task in uploads if task is not None}) == 1
    with pytest.raises(IdempotencyConflict):
        await database.write(order("o-9", request_hash="other"))
    with pytest.raises(IdempotencyConflict):
        await database.write(upload("t-9", request_hash="other"))
    # Keys are per user.
    assert await database.write(lambda tx: claim_upload_key(tx, "bob", "k", "h", "t-bob")) is None
