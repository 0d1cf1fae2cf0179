"""The shop's tables (catalogue, stock, what each service did per order), in DATABASE_PATH.

The orders themselves are the gateway's (gateway/order_store.py); the services
here know an order from its ``order.created`` event.

Every write that a redelivered message may repeat is idempotent by order id:
a reservation, a sale, a sent email and a service's completion are each
recorded once, and asking again returns what was recorded the first time.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from infra.sqlite import SqliteThread, write_transaction

from .contracts import CartLine, OrderCreated, UnknownSku
from .pricing import Product

SCHEMA = """
CREATE TABLE IF NOT EXISTS products (
    sku TEXT PRIMARY KEY, name TEXT NOT NULL,
    unit_price_cents INTEGER NOT NULL, tax_rate_bp INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS stock (
    sku TEXT PRIMARY KEY, available INTEGER NOT NULL CHECK (available >= 0)
);
CREATE TABLE IF NOT EXISTS reservations (
    order_id TEXT PRIMARY KEY, reserved INTEGER NOT NULL, detail TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sales (
    order_id TEXT PRIMARY KEY, total_cents INTEGER NOT NULL, units INTEGER NOT NULL,
    recorded_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS emails (
    order_id TEXT PRIMARY KEY, provider_id TEXT, sent_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS fulfilment (
    order_id TEXT NOT NULL, service TEXT NOT NULL, ok INTEGER NOT NULL, detail TEXT NOT NULL,
    PRIMARY KEY (order_id, service)
);
"""

# The catalogue and stock a new database starts with.
SEED_PRODUCTS = (
    Product("MUG-01", "Enamel mug", 1_250, 2_000),
    Product("TEE-01", "Organic T-shirt", 2_400, 2_000),
    Product("BOOK-01", "Field guide to queues", 3_200, 550),
    Product("CAP-01", "Cap", 1_800, 2_000),
    Product("PRINT-01", "A3 print", 4_500, 2_000),
    Product("STICKER-01", "Sticker pack", 300, 2_000),
)
SEED_STOCK = {"MUG-01": 500, "TEE-01": 200, "BOOK-01": 100, "CAP-01": 50, "PRINT-01": 3}


@dataclass(frozen=True, slots=True)
class Completion:
    """One service's part of an order, as it finished."""

    service: str
    ok: bool
    detail: str


class ShopDb:
    """The shop's tables; create with ``await ShopDb.open(path)`` (seeds a new database)."""

    def __init__(self, path: Path) -> None:
        self._db = SqliteThread(path, name="shop-db")

    @classmethod
    async def open(cls, path: Path) -> ShopDb:
        db = cls(path)
        try:
            await db._db.run(_create_and_seed)
        except BaseException:
            await db.close()  # no connection left for the garbage collector to find
            raise
        return db

    async def close(self) -> None:
        await self._db.close()

    async def catalogue(self, skus: list[str]) -> dict[str, Product]:
        """The products among ``skus`` (missing ones are simply absent)."""

        def read(conn: sqlite3.Connection) -> dict[str, Product]:
            marks = ",".join("?" * len(skus))
            rows = conn.execute(
                "SELECT sku, name, unit_price_cents, tax_rate_bp FROM products"
                f" WHERE sku IN ({marks})",
                skus,
            )
            return {row[0]: Product(*row) for row in rows}

        return await self._db.run(read)

    async def available(self, skus: list[str]) -> dict[str, int]:
        """Units available per SKU (0 when the product has no stock row); UnknownSku otherwise."""

        def read(conn: sqlite3.Connection) -> dict[str, int]:
            marks = ",".join("?" * len(skus))
            rows = conn.execute(
                "SELECT p.sku, coalesce(s.available, 0) FROM products p"
                f" LEFT JOIN stock s ON s.sku = p.sku WHERE p.sku IN ({marks})",
                skus,
            )
            return dict(rows.fetchall())

        levels = await self._db.run(read)
        unknown = sorted(set(skus) - levels.keys())
        if unknown:
            raise UnknownSku(f"unknown SKU: {', '.join(unknown)}")
        return levels

    async def reserve(self, order_id: str, lines: list[CartLine]) -> Completion:
        """Take the order's units from stock, once; the same answer on every later call."""

        def reserve(conn: sqlite3.Connection) -> Completion:
            with write_transaction(conn):
                done = conn.execute(
                    "SELECT reserved, detail FROM reservations WHERE order_id = ?", (order_id,)
                ).fetchone()
                if done is not None:
                    return Completion("inventory", bool(done[0]), done[1])
                wanted: dict[str, int] = {}
                for line in lines:
                    wanted[line.sku] = wanted.get(line.sku, 0) + line.quantity
                short = []
                for sku, quantity in sorted(wanted.items()):
                    row = conn.execute("SELECT available FROM stock WHERE sku = ?", (sku,))
                    available = (row.fetchone() or (0,))[0]
                    if available < quantity:
                        short.append(f"{sku} ({available} left, {quantity} wanted)")
                if short:
                    outcome = Completion("inventory", False, "out of stock: " + ", ".join(short))
                else:
                    for sku, quantity in wanted.items():
                        conn.execute(
                            "UPDATE stock SET available = available - ? WHERE sku = ?",
                            (quantity, sku),
                        )
                    units = sum(wanted.values())
                    outcome = Completion("inventory", True, f"reserved {units} units")
                conn.execute(
                    "INSERT INTO reservations (order_id, reserved, detail) VALUES (?, ?, ?)",
                    (order_id, outcome.ok, outcome.detail),
                )
                return outcome

        return await self._db.run(reserve)

    async def record_sale(self, order: OrderCreated) -> Completion:
        def record(conn: sqlite3.Connection) -> Completion:
            units = sum(line.quantity for line in order.quote.lines)
            conn.execute(
                "INSERT OR IGNORE INTO sales (order_id, total_cents, units, recorded_at)"
                " VALUES (?, ?, ?, ?)",
                (order.order_id, order.quote.total_cents, units, time.time()),
            )
            return Completion("analytics", True, f"recorded {order.quote.total_cents} cents")

        return await self._db.run(record)

    async def email_sent(self, order_id: str) -> str | None:
        """The provider's message id if the order's confirmation was sent, else None."""

        def read(conn: sqlite3.Connection) -> str | None:
            row = conn.execute("SELECT provider_id FROM emails WHERE order_id = ?", (order_id,))
            found = row.fetchone()
            return None if found is None else (found[0] or "")

        return await self._db.run(read)

    async def mark_email_sent(self, order_id: str, provider_id: str) -> None:
        await self._db.run(
            lambda conn: conn.execute(
                "INSERT OR IGNORE INTO emails (order_id, provider_id, sent_at) VALUES (?, ?, ?)",
                (order_id, provider_id, time.time()),
            )
        )

    async def complete(self, order_id: str, done: Completion) -> list[Completion]:
        """Record that a service finished its part (once); every part finished so far."""

        def complete(conn: sqlite3.Connection) -> list[Completion]:
            with write_transaction(conn):
                conn.execute(
                    "INSERT OR IGNORE INTO fulfilment (order_id, service, ok, detail)"
                    " VALUES (?, ?, ?, ?)",
                    (order_id, done.service, done.ok, done.detail),
                )
                rows = conn.execute(
                    "SELECT service, ok, detail FROM fulfilment"
                    " WHERE order_id = ? ORDER BY service",
                    (order_id,),
                )
                return [Completion(service, bool(ok), detail) for service, ok, detail in rows]

        return await self._db.run(complete)


def _create_and_seed(conn: sqlite3.Connection) -> None:
    conn.executescript(SCHEMA)
    with write_transaction(conn):
        conn.executemany(
            "INSERT OR IGNORE INTO products (sku, name, unit_price_cents, tax_rate_bp)"
            " VALUES (?, ?, ?, ?)",
            [(p.sku, p.name, p.unit_price_cents, p.tax_rate_bp) for p in SEED_PRODUCTS],
        )
        conn.executemany(
            "INSERT OR IGNORE INTO stock (sku, available) VALUES (?, ?)", SEED_STOCK.items()
        )
