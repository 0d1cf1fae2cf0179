"""The gateway's order records: what each accepted order was, whose it is, its Idempotency-Key.

Only the gateway reads and writes them (the workers get the order from its
``order.created`` event), in the store's database (``infra.database``).
``insert_order`` runs inside the transaction that accepts the order, with its
``queued`` event and its outbox entry.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from infra.database import Database, Migration, Transaction

from .idempotency import IdempotencyConflict, scoped

COMPONENT = "orders"

ORDER_MIGRATIONS: Sequence[Migration] = [
    # 1: the schema of the SQLite-only order store, adopted as it is by an existing file.
    "CREATE TABLE IF NOT EXISTS orders ("
    " order_id TEXT PRIMARY KEY, idempotency_key TEXT UNIQUE, request_hash TEXT,"
    " body BYTEA NOT NULL, created_at DOUBLE PRECISION NOT NULL, owner TEXT)",
]


@dataclass(frozen=True, slots=True)
class StoredOrder:
    body: bytes  # the OrderCreated JSON
    owner: str | None


async def insert_order(
    tx: Transaction,
    order: bytes,
    order_id: str,
    *,
    owner: str,
    idempotency_key: str | None,
    request_hash: str,
) -> tuple[bytes, bool]:
    """Insert an order (its OrderCreated JSON) in the caller's transaction; ``(body, created)``.

    With a key seen before and the same request hash: that order's body and
    False. With another hash: IdempotencyConflict. ON CONFLICT DO NOTHING: on
    PostgreSQL a concurrent first use of the key waits for the other's commit.
    """
    key = None if idempotency_key is None else scoped(owner, idempotency_key)
    inserted = await tx.fetchval(
        "INSERT INTO orders (order_id, idempotency_key, request_hash, body, created_at, owner)"
        " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (idempotency_key) DO NOTHING"
        " RETURNING order_id",
        order_id,
        key,
        request_hash,
        order,
        time.time(),
        owner,
    )
    if inserted is not None:
        return order, True
    earlier = await _order_for_key(tx, key, request_hash)
    assert earlier is not None  # the conflicting row is committed
    return earlier, False


async def _order_for_key(tx: Transaction, key: str | None, request_hash: str) -> bytes | None:
    row = await tx.fetchrow("SELECT body, request_hash FROM orders WHERE idempotency_key = $1", key)
    if row is None:
        return None
    if row[1] != request_hash:
        raise IdempotencyConflict()
    return bytes(row[0])


class OrderStore:
    """Reads of the ``orders`` table; create with ``await OrderStore.open(database)``.

    The store does not own the database: whoever opened it closes it.
    """

    def __init__(self, database: Database) -> None:
        self.database = database

    @classmethod
    async def open(cls, database: Database) -> OrderStore:
        await database.migrate(COMPONENT, ORDER_MIGRATIONS)
        return cls(database)

    async def order_for_key(
        self, owner: str, idempotency_key: str, request_hash: str
    ) -> bytes | None:
        """The order ``owner`` created earlier with this key and request; IdempotencyConflict
        if the key came with another request; None if the key is new (keys are per owner)."""
        key = scoped(owner, idempotency_key)
        return await self.database.read(lambda tx: _order_for_key(tx, key, request_hash))

    async def get_order(self, order_id: str) -> StoredOrder | None:
        async def read(tx: Transaction) -> StoredOrder | None:
            row = await tx.fetchrow("SELECT body, owner FROM orders WHERE order_id = $1", order_id)
            return None if row is None else StoredOrder(bytes(row[0]), row[1])

        return await self.database.read(read)
