"""The gateway's order records: what each accepted order was, whose it is, its Idempotency-Key.

Only the gateway reads and writes them (the workers get the order from its
``order.created`` event), in the SQLite file of the task store (DATABASE_PATH).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from infra.sqlite import DatabaseUnavailable, SqliteThread, write_transaction

from .store import StoreUnavailable

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    order_id TEXT PRIMARY KEY, idempotency_key TEXT UNIQUE, request_hash TEXT,
    body BLOB NOT NULL, created_at REAL NOT NULL, owner TEXT
);
"""


class IdempotencyConflict(Exception):
    """An Idempotency-Key was used before with another request body."""


@dataclass(frozen=True, slots=True)
class StoredOrder:
    body: bytes  # the OrderCreated JSON
    owner: str | None


class OrderStore:
    """The ``orders`` table; create with ``await OrderStore.open(path)``."""

    def __init__(self, path: Path, *, timeout_s: float = 2.0) -> None:
        self._db = SqliteThread(path, name="order-store")
        self._timeout_s = timeout_s

    @classmethod
    async def open(cls, path: Path, *, timeout_s: float = 2.0) -> OrderStore:
        store = cls(path, timeout_s=timeout_s)
        await store._db.run(_create)
        return store

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn(connection)`` on the store's thread within the bound, or StoreUnavailable."""
        try:
            return await self._db.write(fn, timeout_s=self._timeout_s)
        except DatabaseUnavailable as exc:
            raise StoreUnavailable(f"the order store cannot take a write now: {exc}") from exc

    async def close(self) -> None:
        await self._db.close()

    async def order_for_key(
        self, owner: str, idempotency_key: str, request_hash: str
    ) -> bytes | None:
        """The order ``owner`` created earlier with this key and request; IdempotencyConflict
        if the key came with another request; None if the key is new (keys are per owner)."""

        def read(conn: sqlite3.Connection) -> bytes | None:
            row = conn.execute(
                "SELECT body, request_hash FROM orders WHERE idempotency_key = ?",
                (_scoped(owner, idempotency_key),),
            ).fetchone()
            if row is None:
                return None
            if row[1] != request_hash:
                raise IdempotencyConflict("this Idempotency-Key was used with another request")
            return bytes(row[0])

        return await self._run(read)

    async def create_order(
        self,
        order: bytes,
        order_id: str,
        *,
        owner: str,
        idempotency_key: str | None,
        request_hash: str,
    ) -> tuple[bytes, bool]:
        """Insert an order (its OrderCreated JSON); ``(body, created)``.

        With a key seen before and the same request hash: that order's body and
        False. With another hash: IdempotencyConflict.
        """

        key = None if idempotency_key is None else _scoped(owner, idempotency_key)

        def create(conn: sqlite3.Connection) -> tuple[bytes, bool]:
            with write_transaction(conn):
                if key is not None:
                    row = conn.execute(
                        "SELECT body, request_hash FROM orders WHERE idempotency_key = ?",
                        (key,),
                    ).fetchone()
                    if row is not None:
                        if row[1] != request_hash:
                            raise IdempotencyConflict(
                                "this Idempotency-Key was used with another request"
                            )
                        return bytes(row[0]), False
                conn.execute(
                    "INSERT INTO orders"
                    " (order_id, idempotency_key, request_hash, body, created_at, owner)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (order_id, key, request_hash, order, time.time(), owner),
                )
                return order, True

        return await self._run(create)

    async def delete_order(self, order_id: str) -> None:
        await self._run(
            lambda conn: conn.execute("DELETE FROM orders WHERE order_id = ?", (order_id,))
        )

    async def get_order(self, order_id: str) -> StoredOrder | None:
        def read(conn: sqlite3.Connection) -> StoredOrder | None:
            row = conn.execute("SELECT body, owner FROM orders WHERE order_id = ?", (order_id,))
            found = row.fetchone()
            return None if found is None else StoredOrder(bytes(found[0]), found[1])

        return await self._run(read)


def _scoped(owner: str, idempotency_key: str) -> str:
    # Keys are per user: two users who pick the same key get two orders.
    return f"{owner}\x1f{idempotency_key}"


def _create(conn: sqlite3.Connection) -> None:
    conn.executescript(SCHEMA)
    columns = {row[1] for row in conn.execute("PRAGMA table_info(orders)")}
    if "owner" not in columns:  # a database from before orders had owners
        conn.execute("ALTER TABLE orders ADD COLUMN owner TEXT")
