"""``POST /orders`` and ``GET /orders/{id}``: priced over RPC, stock-checked, announced once.

An order is accepted in this order: validate the body; answer a repeated
``Idempotency-Key`` from the gateway's order store; price the cart (``orders.quote``) and
check stock (``inventory.check``) over RPC; store the order and its ``queued``
status event; publish ``order.created`` with a confirm; answer 201. If the
publish fails, the order and its event are removed and the answer is 503.

The order's status stream (``events_url``) shows the email, inventory and
analytics consumers finishing their parts, then the order's outcome.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse

from rpc.errors import BrokerUnavailable, RpcError
from workers.messages import encoder, new_event, new_task_id
from workers.shop.contracts import (
    ORDER_CREATED,
    ORDER_KIND,
    ORDER_QUEUES,
    ORDERS_EXCHANGE,
    Cart,
    OrderCreated,
    OrderRequest,
    Quote,
    StockLevels,
    StockQuery,
)
from workers.topology import declare_event_queue

from .auth import authenticate
from .bodies import decode_json, read_body
from .errors import HttpError, unavailable
from .metrics import TASKS_ACCEPTED
from .order_store import IdempotencyConflict, OrderStore
from .publisher import Publisher
from .rpc_errors import http_error
from .store import TaskStore
from .views import events_url, status_url

_request_decoder = msgspec.json.Decoder(OrderRequest)
_order_decoder = msgspec.json.Decoder(OrderCreated)
MAX_IDEMPOTENCY_KEY = 200


async def create_order(request: Request) -> JSONResponse:
    state = request.app.state
    orders: OrderStore = state.orders
    publisher: Publisher = state.publisher
    user = authenticate(request)
    if not publisher.ready:
        raise unavailable("not connected to the broker")
    order_request = decode_json(await read_body(request), _request_decoder)
    key = request.headers.get("idempotency-key")
    if key is not None and not 0 < len(key) <= MAX_IDEMPOTENCY_KEY:
        raise HttpError(400, "bad_idempotency_key", "Idempotency-Key must be 1-200 characters")
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
    try:
        body, created = await orders.create_order(
            encoder.encode(order),
            order_id,
            owner=user.user_id,
            idempotency_key=key,
            request_hash=request_hash,
        )
    except IdempotencyConflict as exc:
        raise HttpError(409, "idempotency_conflict", str(exc)) from None
    if not created:
        return _created(_order_decoder.decode(body))
    await _announce(state.store, publisher, orders, order, body, owner=user.user_id)
    TASKS_ACCEPTED.labels(ORDER_KIND).inc()
    return _created(order)


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


async def _announce(
    store: TaskStore,
    publisher: Publisher,
    orders: OrderStore,
    order: OrderCreated,
    body: bytes,
    *,
    owner: str,
) -> None:
    """Record the order's ``queued`` event and publish ``order.created``; undo both on failure."""
    queued = new_event(ORDER_KIND, order.order_id, "queued", 1)
    await store.record([(queued, encoder.encode(queued))], owner=owner)
    try:
        await publisher.publish(
            body,
            exchange=ORDERS_EXCHANGE,
            routing_key=ORDER_CREATED,
            message_id=order.order_id,
            message_type=ORDER_CREATED,
            declare=_declare_order_queues,
            mandatory=True,
        )
    except BrokerUnavailable as exc:
        await store.discard_task(order.order_id)
        await orders.delete_order(order.order_id)
        raise unavailable(str(exc)) from None


async def _declare_order_queues(channel: Any) -> None:
    # The consumers' queues exist before the first order, even if no worker ever ran.
    for queue in ORDER_QUEUES:
        await declare_event_queue(
            channel, queue, exchange=ORDERS_EXCHANGE, routing_key=ORDER_CREATED
        )


def _view(order: OrderCreated) -> dict[str, Any]:
    view: dict[str, Any] = msgspec.to_builtins(order)
    view.update(
        total_cents=order.quote.total_cents,
        currency=order.quote.currency,
        status_url=f"/orders/{order.order_id}",
        task_url=status_url(order.order_id),
        events_url=events_url(order.order_id),
    )
    return view


def _created(order: OrderCreated) -> JSONResponse:
    return JSONResponse(
        _view(order), status_code=201, headers={"Location": f"/orders/{order.order_id}"}
    )
