"""The RPC services taskgate serves out of the box: ``python -m rpc workers.services:server``.

``orders.quote`` prices a cart from the catalogue; ``inventory.check`` answers
units available per SKU. Both read the shop's tables in DATABASE_PATH (seeded
with a small catalogue on first use). ``system.ping`` is built in.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from rpc import RpcServer

from .settings import DEFAULT_DATABASE_PATH
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
            _db = await ShopDb.open(Path(os.environ.get("DATABASE_PATH", DEFAULT_DATABASE_PATH)))
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
