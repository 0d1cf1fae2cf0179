"""What happens after an order is accepted: email, inventory and analytics, each on its own queue.

Each consumer claims its part of the order in the shared store (``ShopDb.start_part``),
does it idempotently, records that it finished, and reports it as a
``progress`` event on the order's status stream (kind ``order``, task id =
order id). The consumer whose part finishes the order publishes its outcome:
``succeeded``, or ``failed`` if a part failed (out of stock); it republishes
the three parts first, so every part is on the stream before the stream closes.

So a copy of ``order.created`` (a redelivery, or the outbox relay publishing
it twice) on any host waits while another consumer holds the part, then
changes nothing and publishes nothing. A consumer that died between recording
and publishing leaves an expired claim; the next copy republishes what was
recorded, under the same event ids (derived from the order id and the part),
so the store records each once.

The email is sent under the claim and recorded after; a consumer that dies in
between leaves the claim to expire, and the next copy sends again with the
same ``Idempotency-Key`` (the order id), which a provider that honours it
answers without sending a second email.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Protocol

import msgspec

from .. import claims
from ..errors import InvalidInput
from ..events import EventContext, Subscriber
from ..messages import StatusEvent, Undecodable, decode_message, new_event
from ..metrics import MESSAGE_COPIES
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
from .db import Completion, Progress, ShopDb

logger = logging.getLogger(__name__)

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

        async def send() -> Completion:
            if await self._db.email_sent(order.order_id) is None:
                provider_id = await self._mailer.send(order)
                await self._db.mark_email_sent(order.order_id, provider_id)
            return Completion("email", True, f"confirmation sent to {order.email}")

        await self._part("email", order, send, context)

    async def _inventory(self, body: bytes, context: EventContext) -> None:
        order = _decode(body)
        lines = [CartLine(line.sku, line.quantity) for line in order.quote.lines]
        await self._part(
            "inventory", order, lambda: self._db.reserve(order.order_id, lines), context
        )

    async def _analytics(self, body: bytes, context: EventContext) -> None:
        order = _decode(body)
        await self._part("analytics", order, lambda: self._db.record_sale(order), context)

    async def _part(
        self,
        service: str,
        order: OrderCreated,
        work: Callable[[], Awaitable[Completion]],
        context: EventContext,
    ) -> None:
        """Do ``service``'s part of ``order`` once, whatever copies of its message arrive."""
        start = await claims.when_free(
            lambda: self._db.start_part(service, order.order_id), consumer=f"orders.{service}"
        )
        assert start is not None  # no stopping: EventConsumers.stop cancels what still waits
        if start.done:
            logger.info(
                "order %s: %s already done; a copy changes nothing", order.order_id, service
            )
            MESSAGE_COPIES.labels(f"orders.{service}", "ignored").inc()
            return
        settled = False
        try:
            if start.republish is not None:
                MESSAGE_COPIES.labels(f"orders.{service}", "republished").inc()
                progress = start.republish
                last = next(p for p in progress.parts if p.service == service)
            else:
                last = await work()
                progress = await self._db.complete(order.order_id, last)
            await _publish(order.order_id, last, progress, context)
            settled = True
        finally:
            await self._db.end_part(service, order.order_id, settled=settled)


async def _publish(
    order_id: str, last: Completion, progress: Progress, context: EventContext
) -> None:
    """``last``'s event; all parts' and the outcome too if ``last`` finished the order."""
    parts = progress.parts if progress.finishes_order else [last]
    for part in parts:
        await context.publish_status(_part_event(order_id, part))
    if progress.finishes_order:
        await context.publish_status(_outcome_event(order_id, progress.parts))


def _decode(body: bytes) -> OrderCreated:
    try:
        return decode_message(order_created_decoder, body, "not an order.created event")
    except Undecodable as exc:
        raise InvalidInput(str(exc)) from None


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
