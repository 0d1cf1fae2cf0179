"""rpc.wire's errors split at the boundary: the broker unreachable, or the broker saying no.

Only an unreachable broker is "unavailable" (a 503, a retry); a refused
declaration or permission carries the broker's code and text, and no broad
``except OSError`` takes it for a lost connection.
"""

from __future__ import annotations

import contextlib
from urllib.parse import urlsplit, urlunsplit

import pytest
from pamqp import commands, frame

import rpc
from infra.ports import free_port
from rpc.publish import publish_confirmed
from rpc.wire import (
    BrokerError,
    ChannelClosed,
    ChannelLost,
    ConnectError,
    ConnectionClosed,
    Properties,
    TransportError,
    Unavailable,
    WireConnection,
    WireError,
)
from workers.topology import STATUS_EXCHANGE, declare_kind


@pytest.fixture
def role_urls(broker, role_urls: dict[str, str]) -> dict[str, str]:
    if broker.node is None:
        pytest.skip("the least-privilege users exist on our own node only")
    return role_urls


def with_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    netloc = f"{parts.username}:{password}@{parts.hostname}:{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


async def test_a_406_redeclaration_is_the_brokers_refusal_not_a_lost_broker(
    connection: WireConnection, unique_name
):
    kind = unique_name("kind")
    channel = await connection.raw_channel()
    await declare_kind(channel, kind, max_length=1234)
    other = await connection.raw_channel()

    with pytest.raises(ChannelClosed) as refused:
        await declare_kind(other, kind, max_length=4321)

    assert refused.value.code == 406
    assert "PRECONDITION_FAILED" in refused.value.text
    assert "x-max-length" in refused.value.text
    assert not isinstance(refused.value, Unavailable | ConnectionError | OSError)
    await channel.close()


async def test_a_refused_connection_is_a_transport_error(amqp_url: str):
    parts = urlsplit(amqp_url)
    nobody = urlunsplit(parts._replace(netloc=f"{parts.hostname}:{free_port()}"))

    with pytest.raises(ConnectError) as refused:
        await WireConnection.connect(nobody, name="test-refused", timeout_s=5)
    assert isinstance(refused.value, TransportError)
    with pytest.raises(rpc.BrokerUnavailable):
        await rpc.connect_wire(nobody, name="test-refused", timeout_s=5)


async def test_a_declaration_without_permission_is_an_access_error(
    role_urls: dict[str, str], unique_name
):
    # The rpc role may configure rpc.* only.
    connection = await WireConnection.connect(role_urls["rpc"], name="test-403")
    try:
        channel = await connection.raw_channel()
        with pytest.raises(ChannelClosed) as refused:
            await declare_kind(channel, unique_name("kind"), max_length=10)
    finally:
        await connection.close()

    assert refused.value.code == 403
    assert "ACCESS_REFUSED" in refused.value.text
    assert not isinstance(refused.value, Unavailable)


async def test_a_publish_without_permission_is_refused_not_unavailable(
    role_urls: dict[str, str],
):
    # The gateway may not forge status events: its user has no write on ``status``.
    connection = await WireConnection.connect(role_urls["web"], name="test-403-publish")
    try:
        channel = await connection.raw_channel(publisher_confirms=True)
        with pytest.raises(rpc.BrokerRefused) as refused:
            await publish_confirmed(
                channel,
                b"{}",
                exchange=STATUS_EXCHANGE,
                routing_key="x.y.succeeded",
                properties=Properties(),
            )
    finally:
        await connection.close()

    assert refused.value.code == 403


async def test_a_refused_login_is_the_brokers_refusal(role_urls: dict[str, str]):
    url = with_password(role_urls["web"], "not-the-password")

    with pytest.raises(ConnectionClosed) as refused:
        await WireConnection.connect(url, name="test-login", timeout_s=5)
    assert refused.value.code == 403
    assert isinstance(refused.value, BrokerError)
    with pytest.raises(rpc.BrokerRefused):
        await rpc.connect_wire(url, name="test-login", timeout_s=5)


async def test_a_publish_on_a_channel_closed_over_another_call_is_only_unavailable(
    amqp_url: str,
):
    # The broker names the method it refused. Closed over a declaration, the channel
    # takes a publish awaiting its confirm with it: that publish did nothing wrong and
    # may be tried again on the reopened channel (a 503), while the declaration's
    # caller gets the 406.
    connection = await WireConnection.connect(amqp_url, name="test-lost-publish")
    try:
        channel = await connection.raw_channel(publisher_confirms=True)
        confirm = channel.publish(b"", routing_key="taskgate.nobody", properties=Properties())
        assert confirm is not None
        refused = commands.Channel.Close(
            reply_code=406, reply_text="PRECONDITION_FAILED - x", class_id=50, method_id=10
        )
        raw = frame.marshal(refused, channel.number)
        channel.on_method(20, 40, memoryview(raw)[7:-1])  # Channel.Close

        with pytest.raises(ChannelLost):
            await confirm
        assert isinstance(channel.closed, ChannelClosed) and channel.closed.code == 406
    finally:
        with contextlib.suppress(WireError):
            await connection.close()
