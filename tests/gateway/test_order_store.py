"""The order store on infra.database: it adopts a SQLite file of the SQLite-only store."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest

from gateway.idempotency import IdempotencyConflict
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
