"""Heartbeats both ways, against the real broker, with a one-second heartbeat.

A broker that stops answering (SIGSTOP: its sockets stay open, so TCP notices
nothing for minutes) is given up after about two heartbeat intervals, failing
every pending call with a transport error; an idle client keeps its
connection by sending heartbeats of its own.
"""

from __future__ import annotations

import asyncio
import os
import signal

import rpc
from infra.node import BrokerNode
from rpc.errors import BrokerUnavailable
from rpc.wire import Channel, ConnectionLost, WireConnection

HEARTBEAT_S = 1


def with_heartbeat(url: str) -> str:
    return f"{url}?heartbeat={HEARTBEAT_S}"


async def test_a_broker_that_stops_answering_fails_every_pending_call_and_is_reconnected(
    own_broker: BrokerNode, unique_name
):
    connection = await WireConnection.connect(
        with_heartbeat(own_broker.amqp_url),
        name="test-heartbeats",
        reconnect_interval_s=0.2,
        timeout_s=5,
    )
    set_up: asyncio.Queue[Channel] = asyncio.Queue()

    async def setup(raw: Channel) -> None:
        await raw.queue_declare("", exclusive=True)
        set_up.put_nowait(raw)

    robust = await connection.open_channel(setup)
    set_up.get_nowait()
    client = await rpc.RpcClient.create(connection)
    declaring = await connection.raw_channel()
    confirming = await connection.raw_channel(publisher_confirms=True)
    pid = own_broker.pid
    assert pid is not None

    os.kill(pid, signal.SIGSTOP)
    try:
        pending = [
            asyncio.ensure_future(declaring.queue_declare(unique_name("frozen"), exclusive=True)),
            asyncio.ensure_future(confirming.basic_publish(b"unconfirmed", routing_key="nowhere")),
            asyncio.ensure_future(client.call("nobody.answers", timeout_s=60)),
        ]
        # Detected after about two intervals (2-2.5 s); the bound is far below what TCP
        # alone would take, and far above that on a loaded machine.
        declared, confirmed, called = await asyncio.wait_for(
            asyncio.gather(*pending, return_exceptions=True), 15 * HEARTBEAT_S
        )
        assert not connection.is_up
    finally:
        os.kill(pid, signal.SIGCONT)

    assert isinstance(declared, ConnectionLost), declared
    assert isinstance(confirmed, ConnectionLost), confirmed
    assert f"no frame from the broker in {2 * HEARTBEAT_S} s" in str(declared)
    assert isinstance(called, BrokerUnavailable), called
    assert "no frame from the broker" in str(called)
    # Resumed, the broker is found again and the robust channel set up anew.
    reopened = await asyncio.wait_for(set_up.get(), 60)
    assert (await reopened.queue_declare("", exclusive=True)).queue.startswith("amq.gen-")
    await client.close()
    await robust.close()
    await connection.close()


async def test_an_idle_connection_keeps_itself_open_with_heartbeats(amqp_url: str):
    connection = await WireConnection.connect(with_heartbeat(amqp_url), name="test-idle")
    try:
        channel = await connection.raw_channel()
        lost: list[Exception] = []
        channel.close_callbacks.append(lost.append)

        # Idle is the point of this test, so it sleeps: five intervals with nothing sent
        # but our heartbeats. A broker hearing nothing closes a connection after two.
        await asyncio.sleep(5 * HEARTBEAT_S)

        assert lost == [] and connection.is_up
        assert (await channel.queue_declare("", exclusive=True)).queue.startswith("amq.gen-")
    finally:
        await connection.close()
