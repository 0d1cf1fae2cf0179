"""Wire types and broker names of the shop: RPC requests and replies, the order event, its queues.

Money is in integer cents, so no float ever rounds a price.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from rpc import ServiceError

from ..messages import TASK_ID_PATTERN

Sku = Annotated[str, msgspec.Meta(pattern=r"^[A-Z0-9][A-Z0-9-]{0,31}$", examples=["MUG-01"])]
Quantity = Annotated[int, msgspec.Meta(ge=1, le=100)]
# No control characters (C0, DEL, C1): an address reaches the logs and the mail provider.
_EMAIL_CHAR = r"[^@\s\x00-\x1f\x7f-\x9f]"
Email = Annotated[
    str,
    msgspec.Meta(pattern=rf"^{_EMAIL_CHAR}{{1,64}}@{_EMAIL_CHAR}{{1,190}}$", max_length=254),
]
# An order's id is the task id of its status stream.
OrderId = Annotated[str, msgspec.Meta(pattern=TASK_ID_PATTERN)]

CURRENCY = "EUR"
ORDERS_EXCHANGE = "orders"
ORDER_CREATED = "order.created"
# The kind of an order's status events: routing key ``order.<order_id>.<state>``.
ORDER_KIND = "order"
# The services that act on ``order.created``, each on its own durable queue bound to ``orders``.
SERVICES = ("analytics", "email", "inventory")
ORDER_QUEUES = tuple(f"orders.{service}" for service in SERVICES)


class CartLine(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    sku: Sku
    quantity: Quantity


class Cart(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``orders.quote``'s request."""

    lines: Annotated[list[CartLine], msgspec.Meta(min_length=1, max_length=50)]


class QuoteLine(msgspec.Struct, frozen=True):
    sku: str
    name: str
    quantity: int
    unit_price_cents: int
    tax_cents: int
    line_total_cents: int  # with tax


class Quote(msgspec.Struct, frozen=True):
    """``orders.quote``'s reply."""

    lines: list[QuoteLine]
    subtotal_cents: int
    tax_cents: int
    shipping_cents: int
    total_cents: int
    currency: str = CURRENCY


class StockQuery(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``inventory.check``'s request."""

    skus: Annotated[list[Sku], msgspec.Meta(min_length=1, max_length=50)]


class StockLevels(msgspec.Struct, frozen=True):
    """``inventory.check``'s reply: units available per SKU."""

    available: dict[str, int]


class OrderRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The body of ``POST /orders``."""

    email: Email
    lines: Annotated[list[CartLine], msgspec.Meta(min_length=1, max_length=50)]


class OrderCreated(msgspec.Struct, frozen=True):
    """Published to the ``orders`` topic exchange as ``order.created`` once an order is accepted."""

    order_id: OrderId
    email: str
    quote: Quote
    created_at: float  # Unix time, seconds


class UnknownSku(ServiceError):
    """A cart or query names a SKU the catalogue does not have."""


class OutOfStock(ServiceError):
    """Fewer units are available than the order asks for."""


order_created_decoder = msgspec.json.Decoder(OrderCreated)
