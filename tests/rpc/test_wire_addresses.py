"""Several broker addresses, URL parameters, failover and backoff.

``AMQP_URL`` may name several nodes; a connection takes the first that answers (in a
shuffled order: the tests pass a ``shuffle`` that keeps the order) and fails over to
the others on reconnect, backing off with jitter up to a cap.
"""

from __future__ import annotations

import asyncio
import logging
import random

import pytest

import rpc
from infra.node import BrokerNode
from infra.ports import free_port
from rpc.wire import Channel, ChannelClosed, WireConnection
from rpc.wire.address import BrokerAddress, parse_addresses
from rpc.wire.robust import backoff_s
from taskgate.amqp_address import AmqpAddress

from ..helpers import unreachable_amqp_url


def keep_order(addresses: list[BrokerAddress]) -> None:
    """A ``shuffle`` that does not: the tests choose which node comes first."""


def port_of(url: str) -> int:
    return parse_addresses(url)[0].port


# --- the parser ---------------------------------------------------------------------------


def test_several_comma_separated_urls_are_several_addresses():
    addresses = parse_addresses(
        "amqp://alice:s%40cret@rabbit-1:5673/shop?heartbeat=10, amqp://rabbit-2/%2F,"
    )

    assert addresses == [
        BrokerAddress(
            host="rabbit-1",
            port=5673,
            username="alice",
            password="s@cret",
            vhost="shop",
            heartbeat_s=10,
        ),
        BrokerAddress(host="rabbit-2", vhost="/"),
    ]


def test_defaults_follow_the_uri_spec():
    (address,) = parse_addresses("amqp://")

    assert address == BrokerAddress(
        scheme="amqp", host="localhost", port=5672, username="guest", password="guest", vhost="/"
    )
    assert address.auth_mechanism == "PLAIN"
    assert address.heartbeat_s is None


def test_amqps_defaults_to_port_5671_and_external_auth_is_accepted():
    (address,) = parse_addresses("amqps://rabbit?auth_mechanism=external")

    assert (address.scheme, address.port, address.auth_mechanism) == ("amqps", 5671, "EXTERNAL")


def test_the_parameters_the_client_honours_are_read():
    (address,) = parse_addresses(
        "amqp://h/?heartbeat=0&connection_timeout=2500&channel_max=16&frame_max=8192"
    )

    assert address.heartbeat_s == 0
    assert address.connection_timeout_ms == 2500
    assert (address.channel_max, address.frame_max) == (16, 8192)


def test_an_unknown_parameter_is_refused_naming_it():
    with pytest.raises(ValueError, match="'locale'"):
        parse_addresses("amqp://h/?heartbeat=5&locale=en_US")


@pytest.mark.parametrize("value", ["soon", "-1", ""])
def test_a_bad_heartbeat_names_the_parameter(value: str):
    expected = f"heartbeat must be a non-negative integer, not '{value}'"
    with pytest.raises(ValueError, match=expected):
        parse_addresses(f"amqp://h/?heartbeat={value}")


def test_other_schemes_are_refused():
    with pytest.raises(ValueError, match="not an AMQP URL"):
        parse_addresses("http://h/")


def test_the_cli_reads_the_first_node_with_the_same_parser():
    address = AmqpAddress.parse("amqps://bob:pw@[::1]/%2Fshop?heartbeat=5,amqp://other/")

    assert address == AmqpAddress(host="::1", port=5671, user="bob", password="pw", vhost="/shop")
    assert address.url_host == "[::1]"
    with pytest.raises(ValueError, match="'bogus'"):
        AmqpAddress.parse("amqp://h/?bogus=1")


# --- backoff --------------------------------------------------------------------------------


def test_backoff_grows_is_jittered_and_capped():
    rng = random.Random(14)
    delays = [backoff_s(attempt, 0.5, 8.0, rng.random) for attempt in range(12)]

    for attempt, delay in enumerate(delays):
        ceiling = min(8.0, 0.5 * 2**attempt)
        assert ceiling / 2 <= delay <= ceiling
    assert len({round(d / min(8.0, 0.5 * 2**a), 6) for a, d in enumerate(delays)}) > 1  # jittered
    assert backoff_s(0, 0.5, 8.0, lambda: 1.0) < backoff_s(3, 0.5, 8.0, lambda: 0.0) * 2
    assert backoff_s(1000, 0.5, 8.0, lambda: 1.0) == 8.0


# --- connecting -----------------------------------------------------------------------------


async def test_a_dead_first_address_is_skipped(amqp_url: str):
    dead = unreachable_amqp_url()

    connection = await WireConnection.connect(
        f"{dead},{amqp_url}", name="test-dead-first", timeout_s=5, shuffle=keep_order
    )
    try:
        assert connection.is_up
        assert connection.address is not None and connection.address.port == port_of(amqp_url)
        channel = await connection.raw_channel()
        assert (await channel.queue_declare("", exclusive=True)).queue.startswith("amq.gen-")
    finally:
        await connection.close()


async def test_no_address_answering_names_every_one():
    ports = [free_port(), free_port()]
    url = ",".join(f"amqp://127.0.0.1:{port}/" for port in ports)

    with pytest.raises(rpc.BrokerUnavailable) as caught:
        await rpc.connect_wire(url, name="test-none-answers", timeout_s=5)

    assert all(f"127.0.0.1:{port}" in str(caught.value) for port in ports)


async def test_channel_max_and_frame_max_bound_the_tune_negotiation(amqp_url: str):
    connection = await WireConnection.connect(
        f"{amqp_url}?channel_max=3&frame_max=8192", name="test-tune", timeout_s=5
    )
    try:
        protocol = connection._protocol
        assert protocol is not None
        assert (protocol._channel_max, protocol.frame_max) == (3, 8192)
        channel = await connection.raw_channel()
        assert (await channel.queue_declare("", exclusive=True)).queue.startswith("amq.gen-")
    finally:
        await connection.close()


async def test_a_lost_node_fails_over_to_the_other_and_restores_the_channels(
    own_broker: BrokerNode, amqp_url: str, serve, unique_name
):
    method = unique_name("failover.echo")
    server = rpc.RpcServer("failover")

    @server.method(method)
    async def echo(params: dict) -> dict:
        return params

    await serve(server)  # on the session broker
    connection = await WireConnection.connect(
        f"{own_broker.amqp_url},{amqp_url}",
        name="test-failover",
        reconnect_interval_s=0.1,
        reconnect_max_s=1.0,
        timeout_s=5,
        shuffle=keep_order,
    )
    try:
        assert connection.address is not None
        assert connection.address.port == port_of(own_broker.amqp_url)
        client = await rpc.RpcClient.create(connection)
        set_up: asyncio.Queue[Channel] = asyncio.Queue()

        async def setup(raw: Channel) -> None:
            await raw.queue_declare("", exclusive=True)
            set_up.put_nowait(raw)

        robust = await connection.open_channel(setup)
        set_up.get_nowait()

        await asyncio.to_thread(own_broker.stop)

        reopened = await asyncio.wait_for(set_up.get(), 60)
        assert connection.address.port == port_of(amqp_url)
        assert (await reopened.queue_declare("", exclusive=True)).queue.startswith("amq.gen-")
        assert await client.call(method, {"n": 8}, timeout_s=30) == {"n": 8}
        await robust.close()
        await client.close()
    finally:
        await connection.close()


async def test_a_set_up_that_keeps_failing_backs_off_logging_the_brokers_text(
    connection: WireConnection, unique_name
):
    name = unique_name("inequivalent")
    declared: list[int] = []

    async def setup(raw: Channel) -> None:
        # The first set-up declares the queue; every later one with another argument: a 406.
        await raw.queue_declare(name, exclusive=True, arguments={"x-max-length": len(declared)})
        declared.append(len(declared))

    robust = await connection.open_channel(setup)
    raw = await robust.get_underlay_channel()
    errors: asyncio.Queue[logging.LogRecord] = asyncio.Queue()

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.ERROR:
                errors.put_nowait(record)

    handler = Collect()
    logging.getLogger("rpc.wire.robust").addHandler(handler)
    try:
        with pytest.raises(ChannelClosed):  # the broker closes the channel: it is reopened
            await raw.queue_declare(unique_name("missing"), passive=True)
        records = [await asyncio.wait_for(errors.get(), 30) for _ in range(3)]
    finally:
        logging.getLogger("rpc.wire.robust").removeHandler(handler)
        await robust.close()

    messages = [r.getMessage() for r in records]
    assert declared == [0]
    for n, message in enumerate(messages, start=1):
        assert f"({n} in a row)" in message, messages
        assert "PRECONDITION_FAILED" in message and "x-max-length" in message, message
