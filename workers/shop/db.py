"""The shop's tables (catalogue, stock, what each service did per order), in the shared store.

The orders themselves are the gateway's (gateway/order_store.py); the services
here know an order from its ``order.created`` event, whose message id is the
order id.

Every write that a copy of a message may repeat is idempotent by order id: a
reservation, a sale, a sent email and a service's completion are each
recorded once, and asking again returns what was recorded the first time. A
service claims its part of an order (``workers.claims``) before doing it, so
copies on other hosts wait rather than do it in parallel (``start_part``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from infra.database import Database, Migration, Transaction

from .. import claims
from .contracts import SERVICES, CartLine, OrderCreated, UnknownSku
from .pricing import Product

COMPONENT = "shop"

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


async def _seed(tx: Transaction) -> None:
    await tx.executemany(
        "INSERT INTO products (sku, name, unit_price_cents, tax_rate_bp) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (sku) DO NOTHING",
        [(p.sku, p.name, p.unit_price_cents, p.tax_rate_bp) for p in SEED_PRODUCTS],
    )
    await tx.executemany(
        "INSERT INTO stock (sku, available) VALUES ($1, $2) ON CONFLICT (sku) DO NOTHING",
        list(SEED_STOCK.items()),
    )


MIGRATIONS: list[Migration] = [
    # 1: the tables of the SQLite file before issue 15 (IF NOT EXISTS adopts them as they are).
    """
    CREATE TABLE IF NOT EXISTS products (
        sku TEXT PRIMARY KEY, name TEXT NOT NULL,
        unit_price_cents BIGINT NOT NULL, tax_rate_bp BIGINT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS stock (
        sku TEXT PRIMARY KEY, available BIGINT NOT NULL CHECK (available >= 0)
    );
    CREATE TABLE IF NOT EXISTS reservations (
        order_id TEXT PRIMARY KEY, reserved BIGINT NOT NULL, detail TEXT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS sales (
        order_id TEXT PRIMARY KEY, total_cents BIGINT NOT NULL, units BIGINT NOT NULL,
        recorded_at DOUBLE PRECISION NOT NULL
    );
    CREATE TABLE IF NOT EXISTS emails (
        order_id TEXT PRIMARY KEY, provider_id TEXT, sent_at DOUBLE PRECISION NOT NULL
    );
    CREATE TABLE IF NOT EXISTS fulfilment (
        order_id TEXT NOT NULL, service TEXT NOT NULL, ok BIGINT NOT NULL, detail TEXT NOT NULL,
        PRIMARY KEY (order_id, service)
    )
    """,
    # 2: the seed (that file re-seeded on every start; a seeded file keeps its rows).
    _seed,
    # 3: parts finished per order, a row whose lock orders the parts of one order, and
    # which part finished it (its copies, and only its, republish the outcome).
    """
    CREATE TABLE order_parts (order_id TEXT PRIMARY KEY, finished BIGINT NOT NULL);
    INSERT INTO order_parts (order_id, finished)
        SELECT order_id, count(*) FROM fulfilment GROUP BY order_id;
    ALTER TABLE fulfilment ADD COLUMN finished BIGINT
    """,
]


@dataclass(frozen=True, slots=True)
class Completion:
    """One service's part of an order, as it finished."""

    service: str
    ok: bool
    detail: str


@dataclass(frozen=True, slots=True)
class Progress:
    """The parts of an order finished so far, and whether ``last`` was the one finishing it."""

    parts: list[Completion]
    finishes_order: bool


@dataclass(frozen=True, slots=True)
class PartStart:
    """What a copy of ``order.created`` must do for one service: ``run`` the part,
    ``republish`` what was recorded, wait (``wait_until_s``), or nothing."""

    run: bool = False
    republish: Progress | None = None
    wait_until_s: float | None = None

    @property
    def done(self) -> bool:
        return not self.run and self.republish is None and self.wait_until_s is None


class ShopDb:
    """The shop's tables in ``db``; create with ``await ShopDb.open(db)`` (seeds a new store)."""

    def __init__(self, db: Database, *, holder: str, lease_s: float) -> None:
        self.db = db
        self.holder = holder
        self.lease_s = lease_s

    @classmethod
    async def open(
        cls, db: Database, *, holder: str | None = None, lease_s: float = 30.0
    ) -> ShopDb:
        await db.migrate(claims.COMPONENT, claims.MIGRATIONS)
        await db.migrate(COMPONENT, MIGRATIONS)
        return cls(db, holder=holder or claims.new_holder("shop"), lease_s=lease_s)

    async def catalogue(self, skus: list[str]) -> dict[str, Product]:
        """The products among ``skus`` (missing ones are simply absent)."""
        if not skus:
            return {}

        async def read(tx: Transaction) -> dict[str, Product]:
            rows = await tx.fetch(
                "SELECT sku, name, unit_price_cents, tax_rate_bp FROM products"
                f" WHERE sku IN ({_marks(len(skus))})",
                *skus,
            )
            return {row[0]: Product(*row) for row in rows}

        return await self.db.read(read)

    async def available(self, skus: list[str]) -> dict[str, int]:
        """Units available per SKU (0 when the product has no stock row); UnknownSku otherwise."""
        if not skus:
            return {}

        async def read(tx: Transaction) -> dict[str, int]:
            rows = await tx.fetch(
                "SELECT p.sku, coalesce(s.available, 0) FROM products p"
                f" LEFT JOIN stock s ON s.sku = p.sku WHERE p.sku IN ({_marks(len(skus))})",
                *skus,
            )
            return {sku: int(available) for sku, available in rows}

        levels = await self.db.read(read)
        unknown = sorted(set(skus) - levels.keys())
        if unknown:
            raise UnknownSku(f"unknown SKU: {', '.join(unknown)}")
        return levels

    async def start_part(self, service: str, order_id: str) -> PartStart:
        """Claim ``service``'s part of the order unless another consumer holds it.

        After ``run`` or ``republish``, call ``end_part`` once its events are
        published or the message goes back to the queue.
        """

        async def start(tx: Transaction) -> PartStart:
            scope = f"order.{service}"
            claim = await claims.take(tx, scope, order_id, self.holder, time.time(), self.lease_s)
            if not claim.won:
                return PartStart(wait_until_s=claim.until_s)
            row = await tx.fetchrow(
                "SELECT finished FROM fulfilment WHERE order_id = $1 AND service = $2",
                order_id,
                service,
            )
            if row is None:
                return PartStart(run=True)
            if not claim.had_prior:
                await claims.release(tx, scope, order_id, self.holder)
                return PartStart()
            parts = await _parts(tx, order_id)
            # A row of before issue 15 has no number: it may be the one that finished the order.
            finishing = row[0] is None or row[0] == len(SERVICES)
            return PartStart(republish=Progress(parts, finishing and len(parts) == len(SERVICES)))

        return await self.db.write(start)

    async def end_part(self, service: str, order_id: str, *, settled: bool) -> None:
        """Give the claim up: its events are published (``settled``), or the message goes
        back to the queue (then the claim only expires; see workers/claims.py)."""
        scope = f"order.{service}"
        end = claims.release if settled else claims.expire
        await self.db.write(lambda tx: end(tx, scope, order_id, self.holder))

    async def reserve(self, order_id: str, lines: list[CartLine]) -> Completion:
        """Take the order's units from stock, once; the same answer on every later call."""
        wanted: dict[str, int] = {}
        for line in lines:
            wanted[line.sku] = wanted.get(line.sku, 0) + line.quantity
        skus = sorted(wanted)

        async def reserve(tx: Transaction) -> Completion:
            # The row first: a concurrent copy waits on it (PostgreSQL) and then finds it.
            added = await tx.execute(
                "INSERT INTO reservations (order_id, reserved, detail) VALUES ($1, 0, '')"
                " ON CONFLICT (order_id) DO NOTHING",
                order_id,
            )
            if not added:
                row = await tx.fetchrow(
                    "SELECT reserved, detail FROM reservations WHERE order_id = $1", order_id
                )
                assert row is not None
                return Completion("inventory", bool(row[0]), row[1])
            # Locked in SKU order, so two orders of the same SKUs cannot deadlock.
            rows = (
                []
                if not skus
                else await tx.fetch(
                    f"SELECT sku, available FROM stock WHERE sku IN ({_marks(len(skus))})"
                    " ORDER BY sku FOR UPDATE",
                    *skus,
                )
            )
            levels = {sku: int(available) for sku, available in rows}
            short = [
                f"{sku} ({levels.get(sku, 0)} left, {wanted[sku]} wanted)"
                for sku in skus
                if levels.get(sku, 0) < wanted[sku]
            ]
            if short:
                outcome = Completion("inventory", False, "out of stock: " + ", ".join(short))
            else:
                await tx.executemany(
                    "UPDATE stock SET available = available - $1 WHERE sku = $2",
                    [(wanted[sku], sku) for sku in skus],
                )
                outcome = Completion("inventory", True, f"reserved {sum(wanted.values())} units")
            await tx.execute(
                "UPDATE reservations SET reserved = $1, detail = $2 WHERE order_id = $3",
                int(outcome.ok),
                outcome.detail,
                order_id,
            )
            return outcome

        return await self.db.write(reserve)

    async def record_sale(self, order: OrderCreated) -> Completion:
        units = sum(line.quantity for line in order.quote.lines)
        await self.db.write(
            lambda tx: tx.execute(
                "INSERT INTO sales (order_id, total_cents, units, recorded_at)"
                " VALUES ($1, $2, $3, $4) ON CONFLICT (order_id) DO NOTHING",
                order.order_id,
                order.quote.total_cents,
                units,
                time.time(),
            )
        )
        return Completion("analytics", True, f"recorded {order.quote.total_cents} cents")

    async def email_sent(self, order_id: str) -> str | None:
        """The provider's message id if the order's confirmation was sent, else None."""

        async def read(tx: Transaction) -> str | None:
            row = await tx.fetchrow("SELECT provider_id FROM emails WHERE order_id = $1", order_id)
            return None if row is None else (row[0] or "")

        return await self.db.read(read)

    async def mark_email_sent(self, order_id: str, provider_id: str) -> None:
        await self.db.write(
            lambda tx: tx.execute(
                "INSERT INTO emails (order_id, provider_id, sent_at) VALUES ($1, $2, $3)"
                " ON CONFLICT (order_id) DO NOTHING",
                order_id,
                provider_id,
                time.time(),
            )
        )

    async def complete(self, order_id: str, done: Completion) -> Progress:
        """Record that a service finished its part (once); every part finished so far."""

        async def complete(tx: Transaction) -> Progress:
            # The order's row is locked until commit, so of the parts finishing together
            # exactly one counts the last.
            finished = await tx.fetchval(
                "INSERT INTO order_parts (order_id, finished) VALUES ($1, 1)"
                " ON CONFLICT (order_id) DO UPDATE SET finished = order_parts.finished + 1"
                " RETURNING finished",
                order_id,
            )
            added = await tx.execute(
                "INSERT INTO fulfilment (order_id, service, ok, detail, finished)"
                " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (order_id, service) DO NOTHING",
                order_id,
                done.service,
                int(done.ok),
                done.detail,
                finished,
            )
            if not added:  # recorded before: count it once
                await tx.execute(
                    "UPDATE order_parts SET finished = finished - 1 WHERE order_id = $1", order_id
                )
            parts = await _parts(tx, order_id)
            return Progress(parts, bool(added) and finished == len(SERVICES))

        return await self.db.write(complete)


async def _parts(tx: Transaction, order_id: str) -> list[Completion]:
    rows = await tx.fetch(
        "SELECT service, ok, detail FROM fulfilment WHERE order_id = $1 ORDER BY service",
        order_id,
    )
    return [Completion(service, bool(ok), detail) for service, ok, detail in rows]


def _marks(count: int) -> str:
    """``$1, $2, … $count``."""
    return ", ".join(f"${n}" for n in range(1, count + 1))
