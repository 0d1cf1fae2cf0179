"""The RPC services taskgate serves out of the box: ``python -m rpc workers.services:server``.

``orders.quote`` prices a cart from the catalogue; ``inventory.check`` answers
units available per SKU. Both read the shop's tables in the store
(``DATABASE_URL`` or ``DATABASE_PATH``, seeded with a small catalogue on first
use). ``system.ping`` is built in.
"""

from __future__ import annotations

import asyncio

from infra.database import open_database
from rpc import RpcServer
from rpc.settings import RpcSettings

from .shop.contracts import Cart, Quote, StockLevels, StockQuery
from .shop.db import ShopDb
from .shop.pricing import quote_cart

server = RpcServer("services")

_db: ShopDb | None = None
_opening = asyncio.Lock()


async def shop_db() -> ShopDb:
    """The process's ShopDb, opened (and seeded) on first use."""
    global _db
    async with _opening:
        if _db is None:
            # The rpc process's store: this module is served by ``python -m rpc``.
            _db = await ShopDb.open(await open_database(RpcSettings.from_env().database))
    return _db


@server.method("orders.quote")
async def quote(cart: Cart) -> Quote:
    """Price a cart: unit prices, tax per line, shipping; UnknownSku for SKUs not sold here."""
    db = await shop_db()
    return quote_cart(cart, await db.catalogue(sorted({line.sku for line in cart.lines})))


@server.method("inventory.check")
async def check(query: StockQuery) -> StockLevels:
    """Units available per SKU; UnknownSku for SKUs not sold here."""
    db = await shop_db()
    return StockLevels(available=await db.available(sorted(set(query.skus))))
