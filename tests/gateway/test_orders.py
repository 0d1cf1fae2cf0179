"""POST /orders and POST /rpc/{method} with the real broker, rpc and worker processes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from dataclasses import replace

import aio_pika

from gateway.settings import GatewaySettings
from rpc import RpcServer, connect_wire
from workers.shop.contracts import Cart

from ..helpers import eventually
from .conftest import read_stream, wait_ready

ORDER = {"email": "ada@example.com", "lines": [{"sku": "MUG-01", "quantity": 2}]}


async def test_an_order_is_priced_announced_and_fulfilled_by_three_services(
    gateway_process, worker_process, rpc_process
):
    worker_process(orders=True)
    gateway = gateway_process()
    await gateway.wait_ready()
    async with gateway.client() as client:
        before = (await client.post("/rpc/inventory.check", json={"skus": ["MUG-01"]})).json()
        response = await client.post("/orders", json=ORDER)
        assert response.status_code == 201, response.text
        order = response.json()
        stream = await read_stream(client, order["events_url"])
        after = (await client.post("/rpc/inventory.check", json={"skus": ["MUG-01"]})).json()
        status = (await client.get(order["status_url"])).json()

    # 2 mugs at 12.50 + 20 % tax, shipping under 50.00.
    assert order["quote"]["lines"][0]["line_total_cents"] == 3000
    assert order["total_cents"] == 2500 + 500 + 490
    assert response.headers["location"] == f"/orders/{order['order_id']}"
    events = [event for event in stream if event.event != "message"]
    parts = [json.loads(e.data)["result"]["service"] for e in events if e.event == "progress"]
    assert events[0].event == "queued"
    assert sorted(parts) == ["analytics", "email", "inventory"]
    assert events[-1].event == "succeeded"
    assert json.loads(events[-1].data)["result"]["services"]["inventory"]["ok"] is True
    assert after["available"]["MUG-01"] == before["available"]["MUG-01"] - 2
    assert status["state"] == "succeeded"


async def test_a_bad_body_is_422_with_the_path_of_the_bad_field(gateway_app, gateway_settings):
    async with gateway_app(gateway_settings) as client:
        await wait_ready(client)
        bad_quantity = await client.post(
            "/orders", json={**ORDER, "lines": [{"sku": "MUG-01", "quantity": 0}]}
        )
        no_email = await client.post("/orders", json={"lines": ORDER["lines"]})
        malformed = await client.post(
            "/orders", content=b'{"email": ', headers={"content-type": "application/json"}
        )

    assert bad_quantity.status_code == 422
    assert bad_quantity.json()["error"]["path"] == "$.lines[0].quantity"
    assert no_email.status_code == 422
    assert "email" in no_email.json()["error"]["message"]
    assert malformed.status_code == 400
    assert malformed.json()["error"]["code"] == "malformed_json"


async def test_an_unknown_sku_is_the_services_typed_error(
    gateway_app, gateway_settings, rpc_process
):
    async with gateway_app(gateway_settings) as client:
        await wait_ready(client)
        order = await client.post(
            "/orders", json={**ORDER, "lines": [{"sku": "NOPE-1", "quantity": 1}]}
        )
        quote = await client.post(
            "/rpc/orders.quote", json={"lines": [{"sku": "NOPE-1", "quantity": 1}]}
        )

    for response in (order, quote):
        assert response.status_code == 422
        assert response.json()["error"]["code"] == "UnknownSku"
        assert "NOPE-1" in response.json()["error"]["message"]


async def test_more_than_the_stock_is_409_and_nothing_is_announced(
    gateway_app, gateway_settings, rpc_process
):
    async with gateway_app(gateway_settings) as client:
        await wait_ready(client)
        response = await client.post(
            "/orders", json={**ORDER, "lines": [{"sku": "PRINT-01", "quantity": 4}]}
        )

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "out_of_stock"
    assert response.json()["error"]["available"] == {"PRINT-01": 3}


async def test_an_idempotency_key_gives_the_same_order_once_and_refuses_another_body(
    gateway_app, gateway_settings, rpc_process, amqp_url
):
    async with gateway_app(gateway_settings) as client:
        await wait_ready(client)
        first = await client.post("/orders", json=ORDER, headers={"Idempotency-Key": "k-1"})
        # The same request, its JSON written differently.
        again = await client.post(
            "/orders",
            content=json.dumps(ORDER, indent=2).encode(),
            headers={"Idempotency-Key": "k-1", "content-type": "application/json"},
        )
        other = await client.post(
            "/orders",
            json={**ORDER, "email": "bob@example.com"},
            headers={"Idempotency-Key": "k-1"},
        )
        order_id = first.json()["order_id"]
        await eventually(lambda: outbox_empty(gateway_settings))
        announced = await count_announcements(amqp_url, order_id)

    assert first.status_code == 201
    assert again.status_code == 201
    assert again.json() == first.json()
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "idempotency_conflict"
    assert announced == 1


async def outbox_empty(settings: GatewaySettings) -> bool:
    return not table_rows(settings, "outbox")


def table_rows(settings: GatewaySettings, table: str) -> list[tuple[object, ...]]:
    with contextlib.closing(sqlite3.connect(settings.database_path)) as db:
        return db.execute(f"SELECT * FROM {table}").fetchall()


async def test_a_full_outbox_refuses_an_order_with_503_and_stores_nothing(
    gateway_app, gateway_settings, rpc_process
):
    settings = replace(gateway_settings, outbox_max_pending=0)
    async with gateway_app(settings) as client:
        await wait_ready(client)
        response = await client.post("/orders", json=ORDER, headers={"Idempotency-Key": "full"})

    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert response.json()["error"]["code"] == "outbox_full"
    assert table_rows(settings, "orders") == []
    assert table_rows(settings, "tasks") == []
    assert table_rows(settings, "events") == []


async def count_announcements(amqp_url: str, order_id: str) -> int:
    """order.created messages for ``order_id`` waiting in orders.analytics (nobody consumes it)."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue("orders.analytics", passive=True)
        seen = 0
        while (message := await queue.get(fail=False)) is not None:
            if json.loads(message.body)["order_id"] == order_id:
                seen += 1
                await message.ack()
            else:
                await message.reject(requeue=True)
                break
        return seen


async def test_no_rpc_server_is_503_and_a_slow_one_is_504(gateway_app, gateway_settings, amqp_url):
    async with gateway_app(replace(gateway_settings, rpc_timeout_s=0.3)) as client:
        await wait_ready(client)
        nobody = await client.post("/orders", json=ORDER)

        stuck = asyncio.Event()
        slow = RpcServer("slow-quotes")

        @slow.method("orders.quote")
        async def never_answers(cart: Cart) -> dict:
            await stuck.wait()
            return {}

        connection = await connect_wire(amqp_url, name="slow-quotes")
        try:
            await slow.start(connection, prefetch=4, concurrency=4)
            try:
                timed_out = await client.post("/rpc/orders.quote", json={"lines": ORDER["lines"]})
            finally:
                stuck.set()
                await slow.stop(5)
        finally:
            await connection.close()

    assert nobody.status_code == 503
    assert nobody.headers["retry-after"] == "1"
    assert timed_out.status_code == 504
    assert timed_out.json()["error"]["code"] == "rpc_timeout"


async def test_rpc_over_http_serves_public_methods_only(gateway_app, gateway_settings, rpc_process):
    async with gateway_app(gateway_settings) as client:
        await wait_ready(client)
        quote = await client.post("/rpc/orders.quote", json={"lines": ORDER["lines"]})
        stock = await client.post("/rpc/inventory.check", json={"skus": ["MUG-01", "CAP-01"]})
        bad = await client.post("/rpc/inventory.check", json={"skus": []})
        internal = await client.post("/rpc/system.ping", json={})

    assert quote.status_code == 200
    assert quote.json()["total_cents"] == 3490
    assert set(stock.json()["available"]) == {"MUG-01", "CAP-01"}
    assert bad.status_code == 422
    assert bad.json()["error"]["code"] == "invalid_params"
    assert internal.status_code == 404
