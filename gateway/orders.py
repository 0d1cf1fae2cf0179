"""``POST /orders`` and ``GET /orders/{id}``: priced over RPC, stock-checked, announced once.

An order is accepted in this order: validate the body; answer a repeated
``Idempotency-Key`` from the gateway's order store; price the cart (``orders.quote``) and
check stock (``inventory.check``) over RPC; then one transaction stores the
order, its ``queued`` status event and its ``order.created`` message in the
outbox; answer 201 after its commit. The outbox relay publishes the message
(persistent, confirmed, mandatory, ``message_id`` = the order id). A 503 means
nothing was stored: the store could not commit, or the outbox is full.

The order's status stream (``events_url``) shows the email, inventory and
analytics consumers finishing their parts, then the order's outcome.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse

from infra.database import Database, Transaction
from rpc.errors import RpcError
from workers.messages import encoder, new_event, new_task_id
from workers.shop.contracts import (
    ORDER_CREATED,
    ORDER_KIND,
    ORDERS_EXCHANGE,
    Cart,
    OrderCreated,
    OrderRequest,
    Quote,
    StockLevels,
    StockQuery,
)

from .announce import announce_recorded, to_announce
from .auth import authenticate
from .bodies import decode_json, read_body
from .errors import HttpError
from .idempotency import IDEMPOTENCY_HEADER, IdempotencyConflict, idempotency_key
from .metrics import TASKS_ACCEPTED
from .openapi import documented
from .order_store import OrderStore, insert_order
from .outbox import OutboxEntry, OutboxFull, add_to_outbox, outbox_full
from .outbox_relay import OutboxRelay
from .rpc_errors import http_error
from .settings import GatewaySettings
from .store import StoredEvent, TaskStore
from .task_store import record_events
from .views import events_url, status_url

_request_decoder = msgspec.json.Decoder(OrderRequest)
_order_decoder = msgspec.json.Decoder(OrderCreated)


class OrderView(msgspec.Struct, frozen=True):
    """An order as accepted: its priced cart and where to follow it."""

    order_id: str
    email: str
    quote: Quote
    created_at: float
    total_cents: int
    currency: str
    status_url: str
    task_url: str
    events_url: str


class OrderStatus(OrderView, frozen=True):
    """``GET /orders/{id}``: the order and how far it has got."""

    state: str
    error: str | None


@documented(
    "Place an order",
    responses={201: OrderView},
    body=OrderRequest,
    errors=(409, 502, 504),
    headers=IDEMPOTENCY_HEADER,
)
async def create_order(request: Request) -> JSONResponse:
    state = request.app.state
    orders: OrderStore = state.orders
    user = authenticate(request)
    order_request = decode_json(await read_body(request), _request_decoder)
    key = idempotency_key(request)
    # The same order asked for again: the same hash, whatever the JSON's spacing or key order.
    request_hash = hashlib.sha256(encoder.encode(order_request)).hexdigest()
    if key is not None:
        try:
            earlier = await orders.order_for_key(user.user_id, key, request_hash)
        except IdempotencyConflict as exc:
            raise HttpError(409, "idempotency_conflict", str(exc)) from None
        if earlier is not None:
            return _created(_order_decoder.decode(earlier))
    quote = await _price(request, order_request)

    order_id = new_task_id()
    order = OrderCreated(
        order_id=order_id, email=order_request.email, quote=quote, created_at=time.time()
    )
    body = encoder.encode(order)
    queued = new_event(ORDER_KIND, order_id, "queued", 1)
    entry = OutboxEntry(
        message_id=order_id,
        exchange=ORDERS_EXCHANGE,
        routing_key=ORDER_CREATED,
        body=body,
        message_type=ORDER_CREATED,
    )
    settings: GatewaySettings = state.settings

    recorded: list[StoredEvent] = []

    async def accept(tx: Transaction) -> tuple[bytes, bool]:
        stored, created = await insert_order(
            tx,
            body,
            order_id,
            owner=user.user_id,
            idempotency_key=key,
            request_hash=request_hash,
        )
        if created:
            events = [(queued, encoder.encode(queued))]
            recorded[:] = to_announce(await record_events(tx, events, owner=user.user_id))
            await add_to_outbox(tx, entry, max_pending=settings.outbox_max_pending)
        return stored, created

    database: Database = state.database
    try:
        # Shielded: a client that leaves does not cut the transaction short; whether it
        # committed, a retry with the same key finds out.
        stored, created = await asyncio.shield(database.write(accept))
    except IdempotencyConflict as exc:
        raise HttpError(409, "idempotency_conflict", str(exc)) from None
    except OutboxFull as exc:
        raise outbox_full(exc) from None
    if not created:
        return _created(_order_decoder.decode(stored))
    relay: OutboxRelay = state.relay
    relay.wake()
    TASKS_ACCEPTED.labels(ORDER_KIND).inc()
    for event in recorded:
        await announce_recorded(state.publisher, event)
    return _created(order)


@documented("An order and its state", responses={200: OrderStatus}, errors=(404,))
async def get_order(request: Request) -> JSONResponse:
    user = authenticate(request)
    orders: OrderStore = request.app.state.orders
    store: TaskStore = request.app.state.store
    order_id = request.path_params["order_id"]
    stored = await orders.get_order(order_id)
    if stored is None or stored.owner != user.user_id:
        raise HttpError(404, "not_found", f"no order {order_id!r}")
    summary = await store.get_task(order_id)
    view = _view(_order_decoder.decode(stored.body))
    view["state"] = summary.state if summary is not None else "queued"
    view["error"] = summary.error if summary is not None else None
    return JSONResponse(view)


async def _price(request: Request, order: OrderRequest) -> Quote:
    """The quote, after checking that every line is in stock."""
    client = request.app.state.broker.client
    try:
        quote = await client.call("orders.quote", Cart(lines=order.lines), response_type=Quote)
        skus = sorted({line.sku for line in order.lines})
        stock = await client.call(
            "inventory.check", StockQuery(skus=skus), response_type=StockLevels
        )
    except RpcError as exc:
        raise http_error(exc) from None
    wanted: dict[str, int] = {}
    for line in order.lines:
        wanted[line.sku] = wanted.get(line.sku, 0) + line.quantity
    short = [sku for sku, quantity in wanted.items() if stock.available.get(sku, 0) < quantity]
    if short:
        raise HttpError(
            409,
            "out_of_stock",
            f"not enough stock for {', '.join(sorted(short))}",
            available={sku: stock.available.get(sku, 0) for sku in sorted(short)},
        )
    return quote


def _view(order: OrderCreated) -> dict[str, Any]:
    view = OrderView(
        order_id=order.order_id,
        email=order.email,
        quote=order.quote,
        created_at=order.created_at,
        total_cents=order.quote.total_cents,
        currency=order.quote.currency,
        status_url=f"/orders/{order.order_id}",
        task_url=status_url(order.order_id),
        events_url=events_url(order.order_id),
    )
    return msgspec.to_builtins(view)  # type: ignore[no-any-return]


def _created(order: OrderCreated) -> JSONResponse:
    return JSONResponse(
        _view(order), status_code=201, headers={"Location": f"/orders/{order.order_id}"}
    )
