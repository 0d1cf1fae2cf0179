"""What happens after an order is accepted: email, inventory and analytics, each on its own queue.

Each consumer does its part idempotently (a redelivery finds it done), records
that it finished, and reports it as a ``progress`` event on the order's status
stream (kind ``order``, task id = order id). The consumer that finds all three
parts finished publishes the order's outcome: ``succeeded``, or ``failed`` if a
part failed (out of stock). Event ids are derived from the order id and the
part, so the copies a redelivery or a race publishes are recorded once; the
one that publishes the outcome republishes the three parts first, so every
part is on the stream before the stream closes.
"""

from __future__ import annotations

import uuid
from typing import Protocol

import msgspec

from ..errors import InvalidInput
from ..events import EventContext, Subscriber
from ..messages import StatusEvent, new_event
from .contracts import (
    ORDER_CREATED,
    ORDER_KIND,
    ORDER_QUEUES,
    ORDERS_EXCHANGE,
    SERVICES,
    CartLine,
    OrderCreated,
    order_created_decoder,
)
from .db import Completion, ShopDb

_EVENT_IDS = uuid.UUID("6f1d3c2a-5b7e-4c8d-9a0b-1c2d3e4f5a6b")


class Sender(Protocol):
    async def send(self, order: OrderCreated) -> str: ...


def order_event_id(order_id: str, part: str) -> str:
    """The same id for every copy of one order's event about ``part``."""
    return uuid.uuid5(_EVENT_IDS, f"{order_id}/{part}").hex


class OrderFulfilment:
    """The ``orders.email``, ``orders.inventory`` and ``orders.analytics`` consumers."""

    def __init__(self, db: ShopDb, mailer: Sender) -> None:
        self._db = db
        self._mailer = mailer

    def subscribers(self) -> list[Subscriber]:
        handlers = {
            "analytics": self._analytics,
            "email": self._email,
            "inventory": self._inventory,
        }
        return [
            Subscriber(queue, ORDERS_EXCHANGE, ORDER_CREATED, handlers[service])
            for service, queue in zip(SERVICES, ORDER_QUEUES, strict=True)
        ]

    async def _email(self, body: bytes, context: EventContext) -> None:
        order = _decode(body)
        provider_id = await self._db.email_sent(order.order_id)
        if provider_id is None:
            provider_id = await self._mailer.send(order)
            await self._db.mark_email_sent(order.order_id, provider_id)
        done = Completion("email", True, f"confirmation sent to {order.email}")
        await self._finish(order, done, context)

    async def _inventory(self, body: bytes, context: EventContext) -> None:
        order = _decode(body)
        lines = [CartLine(line.sku, line.quantity) for line in order.quote.lines]
        await self._finish(order, await self._db.reserve(order.order_id, lines), context)

    async def _analytics(self, body: bytes, context: EventContext) -> None:
        order = _decode(body)
        await self._finish(order, await self._db.record_sale(order), context)

    async def _finish(self, order: OrderCreated, done: Completion, context: EventContext) -> None:
        finished = await self._db.complete(order.order_id, done)
        parts = finished if len(finished) == len(SERVICES) else [done]
        for part in parts:
            await context.publish_status(_part_event(order.order_id, part))
        if len(finished) == len(SERVICES):
            await context.publish_status(_outcome_event(order.order_id, finished))


def _decode(body: bytes) -> OrderCreated:
    try:
        return order_created_decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise InvalidInput(f"not an order.created event: {exc}") from None


def _part_event(order_id: str, part: Completion) -> StatusEvent:
    event = new_event(
        ORDER_KIND,
        order_id,
        "progress",
        1,
        message=f"{part.service}: {part.detail}",
        result={"service": part.service, "ok": part.ok, "detail": part.detail},
    )
    return msgspec.structs.replace(event, event_id=order_event_id(order_id, part.service))


def _outcome_event(order_id: str, parts: list[Completion]) -> StatusEvent:
    services = {part.service: {"ok": part.ok, "detail": part.detail} for part in parts}
    failures = [f"{part.service}: {part.detail}" for part in parts if not part.ok]
    if failures:
        event = new_event(
            ORDER_KIND,
            order_id,
            "failed",
            1,
            error="; ".join(failures),
            result={"services": services},
        )
    else:
        event = new_event(ORDER_KIND, order_id, "succeeded", 1, result={"services": services})
    return msgspec.structs.replace(event, event_id=order_event_id(order_id, "outcome"))
