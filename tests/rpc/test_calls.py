"""Request/reply behaviour of RpcClient and RpcServer against the real broker."""

from __future__ import annotations

import asyncio
import logging
import uuid

import aiormq
import msgspec
import pytest

import rpc
from rpc import codec
from rpc.topology import DEAD_QUEUE, REASON_HEADER, method_queue

from ..helpers import eventually


class Cart(msgspec.Struct):
    sku: str
    quantity: int


class Quote(msgspec.Struct):
    sku: str
    total_cents: int


class OutOfStock(rpc.ServiceError):
    pass


def pricing_server(prefix: str) -> rpc.RpcServer:
    server = rpc.RpcServer("pricing")

    @server.method(f"{prefix}.quote")
    async def quote(cart: Cart) -> Quote:
        if cart.quantity > 10:
            raise OutOfStock(f"only 10 of {cart.sku} left")
        return Quote(cart.sku, 250 * cart.quantity)

    @server.method(f"{prefix}.crash")
    async def crash() -> None:
        raise RuntimeError("secret internals")

    return server


async def test_round_trip_decodes_typed_reply(serve, client, unique_name):
    prefix = unique_name("pricing")
    await serve(pricing_server(prefix))

    quote = await client.call(f"{prefix}.quote", Cart("A-1", 3), response_type=Quote)

    assert quote == Quote("A-1", 750)


async def test_system_ping_is_built_in(serve, client, unique_name):
    await serve(rpc.RpcServer(unique_name("ping")))

    assert (await client.call("system.ping"))["pong"] is True


async def test_thousand_concurrent_calls_each_get_their_own_answer(serve, client, unique_name):
    method = unique_name("double")
    server = rpc.RpcServer("doubler")

    @server.method(method)
    async def double(params: dict) -> dict:
        await asyncio.sleep(0)  # let replies interleave
        return {"n": params["n"], "double": params["n"] * 2}

    await serve(server)

    replies = await asyncio.gather(*(client.call(method, {"n": n}) for n in range(1000)))

    assert replies == [{"n": n, "double": 2 * n} for n in range(1000)]


async def test_timeout_raises_and_late_reply_is_dropped_and_logged(
    serve, client, unique_name, caplog
):
    method = unique_name("stuck")
    release = asyncio.Event()
    server = rpc.RpcServer("stuck")

    @server.method(method)
    async def stuck() -> str:
        await release.wait()
        return "late"

    await serve(server)

    with pytest.raises(rpc.RpcTimeout):
        await client.call(method, timeout_s=0.3)
    release.set()

    async def late_reply_logged() -> bool:
        return any("late or unknown reply" in r.getMessage() for r in caplog.records)

    with caplog.at_level(logging.WARNING, logger="rpc.client"):
        await eventually(late_reply_logged, timeout_s=10)
    assert await client.call("system.ping")  # the client still works


async def test_method_without_server_fails_at_once_with_no_server(client, unique_name):
    with pytest.raises(rpc.RpcNoServer):
        # A timeout far above the test's own limit: only an immediate return passes.
        await client.call(unique_name("nobody.home"), {}, timeout_s=600)


async def test_service_error_reaches_caller_with_type_and_message(serve, client, unique_name):
    prefix = unique_name("pricing")
    await serve(pricing_server(prefix))

    with pytest.raises(rpc.RemoteError) as raised:
        await client.call(f"{prefix}.quote", Cart("A-1", 11))

    assert raised.value.type == "OutOfStock"
    assert raised.value.message == "only 10 of A-1 left"


async def test_handler_crash_is_an_opaque_internal_error(serve, client, unique_name, caplog):
    prefix = unique_name("pricing")
    await serve(pricing_server(prefix))

    with caplog.at_level(logging.ERROR, logger="rpc.server"):
        with pytest.raises(rpc.RemoteError) as raised:
            await client.call(f"{prefix}.crash")

    assert raised.value.type == "InternalError"
    assert "secret internals" not in raised.value.message
    assert any("secret internals" in r.exc_text for r in caplog.records if r.exc_text)


async def test_invalid_request_gets_bad_request_with_field_path(serve, client, unique_name):
    prefix = unique_name("pricing")
    await serve(pricing_server(prefix))

    with pytest.raises(rpc.BadRequest) as raised:
        await client.call(f"{prefix}.quote", {"sku": "A-1", "quantity": "three"})

    assert "$.quantity" in raised.value.message


async def raw_call(
    connection, routing_key: str, body: bytes, **properties
) -> codec.Ok | codec.Error:
    """Publish a hand-made request, as a client in another language would, and await its reply."""
    channel = await (await connection.channel()).get_underlay_channel()
    reply: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def on_reply(message):
        reply.set_result(message.body)

    await channel.basic_consume("amq.rabbitmq.reply-to", on_reply, no_ack=True)
    await channel.basic_publish(
        body,
        routing_key=routing_key,
        properties=aiormq.spec.Basic.Properties(
            reply_to="amq.rabbitmq.reply-to", correlation_id="raw-1", **properties
        ),
    )
    try:
        async with asyncio.timeout(10):
            return codec.decode_reply(await reply)
    finally:
        await channel.close()


async def test_malformed_body_gets_error_reply_and_server_keeps_serving(
    serve, client, pika_connection, unique_name
):
    prefix = unique_name("pricing")
    await serve(pricing_server(prefix))

    reply = await raw_call(
        pika_connection, method_queue(f"{prefix}.quote"), b'{"sku": "A-1", quant'
    )

    assert isinstance(reply, codec.Error)
    assert reply.type == "BadRequest"
    assert await client.call(f"{prefix}.quote", Cart("A-1", 1), response_type=Quote)


async def test_unknown_method_named_in_message_type_gets_error_reply(
    serve, pika_connection, unique_name
):
    prefix = unique_name("pricing")
    await serve(pricing_server(prefix))

    reply = await raw_call(
        pika_connection, method_queue(f"{prefix}.quote"), b"{}", message_type=f"{prefix}.refund"
    )

    assert isinstance(reply, codec.Error)
    assert reply.type == "UnknownMethod"


@pytest.mark.parametrize(
    ("reply_to", "reason"),
    [(None, "no reply_to"), ("victim", "'victim' is not a reply queue")],
    ids=["no-reply-to", "reply-to-a-work-queue"],
)
async def test_request_that_names_no_reply_queue_is_dead_lettered_with_reason(
    serve, client, pika_connection, unique_name, reply_to, reason
):
    prefix = unique_name("pricing")
    await serve(pricing_server(prefix))
    message_id = uuid.uuid4().hex
    channel = await (await pika_connection.channel()).get_underlay_channel()
    # A queue of someone else's (a task queue, the status journal): the server must not
    # write its reply there with its own permissions.
    victim = unique_name("victim")
    await channel.queue_declare(victim, auto_delete=True)
    await channel.basic_publish(
        b'{"sku": "A-1", "quantity": 1}',
        routing_key=method_queue(f"{prefix}.quote"),
        properties=aiormq.spec.Basic.Properties(
            message_id=message_id, reply_to=reply_to and victim
        ),
    )
    found: list[aiormq.abc.DeliveredMessage] = []

    async def dead_lettered() -> bool:
        got = await channel.basic_get(DEAD_QUEUE, no_ack=False)
        if got.delivery_tag is None or isinstance(got.delivery, aiormq.spec.Basic.GetEmpty):
            return False
        mine = got.header.properties.message_id == message_id
        await channel.basic_ack(got.delivery.delivery_tag) if mine else await channel.basic_nack(
            got.delivery.delivery_tag, requeue=True
        )
        if mine:
            found.append(got)
        return mine

    await eventually(dead_lettered, timeout_s=10)

    headers = found[0].header.properties.headers or {}
    assert reason.replace("victim", victim) in str(headers[REASON_HEADER])
    assert (await channel.queue_declare(victim, passive=True)).message_count == 0
    await channel.close()
    assert await client.call(f"{prefix}.quote", Cart("A-1", 1), response_type=Quote)


async def test_closing_client_fails_pending_calls_at_once(serve, connection, unique_name):
    method = unique_name("never")
    release = asyncio.Event()
    server = rpc.RpcServer("never")

    @server.method(method)
    async def never() -> None:
        await release.wait()

    await serve(server)
    client = await rpc.RpcClient.create(connection)
    pending = [asyncio.ensure_future(client.call(method, timeout_s=600)) for _ in range(20)]
    await asyncio.sleep(0)  # let the calls publish
    await client.close()

    results = await asyncio.gather(*pending, return_exceptions=True)
    release.set()

    assert [type(r).__name__ for r in results] == ["RpcClosed"] * len(pending)
    with pytest.raises(rpc.RpcClosed):
        await client.call(method)


@pytest.mark.parametrize("reply_mode", ["direct", "queue"])
async def test_both_reply_modes_round_trip(serve, connection, unique_name, reply_mode):
    prefix = unique_name("pricing")
    await serve(pricing_server(prefix))

    async with await rpc.RpcClient.create(connection, reply_mode=reply_mode) as client:
        quotes = await asyncio.gather(
            *(
                client.call(f"{prefix}.quote", Cart(f"S-{i}", 1), response_type=Quote)
                for i in range(50)
            )
        )

    assert [q.sku for q in quotes] == [f"S-{i}" for i in range(50)]


async def test_method_queues_are_durable_for_rabbitmq_4(serve, connection, unique_name):
    # RabbitMQ 4.0 deprecates transient non-exclusive queues; the broker refuses a
    # redeclaration whose durability differs, so this declare proves the queue's.
    method = unique_name("durable")
    server = rpc.RpcServer("durable")

    @server.method(method)
    async def echo(params: dict) -> dict:
        return params

    await serve(server)
    channel = await connection.raw_channel()

    await channel.queue_declare(method_queue(method), durable=True, auto_delete=True)
    await channel.close()
