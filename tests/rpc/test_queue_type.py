"""RPC_QUEUE_TYPE=quorum: method queues and rpc.dead a cluster keeps through a node's loss.

On a vhost of the test's own: the shared broker's ``rpc.dead`` is classic, and the broker
refuses to declare a queue over one of another type.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from urllib.parse import quote, urlsplit, urlunsplit

import pytest

import rpc
from rpc.topology import DEAD_QUEUE, METHOD_QUEUE_EXPIRES_MS, method_queue

from ..conftest import BrokerHandle


@pytest.fixture
def vhost_url(broker: BrokerHandle, unique_name) -> Iterator[tuple[str, str]]:
    """(the URL of a fresh vhost on our node, its name); deleted after the test."""
    node = broker.node
    if node is None:
        pytest.skip("needs our own node (AMQP_URL is set)")
    vhost = unique_name("vhost")
    user = urlsplit(node.amqp_url).username or "guest"
    node.rabbitmqctl("add_vhost", vhost)
    try:
        node.rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
        parts = urlsplit(node.amqp_url)
        yield urlunsplit((*parts[:2], "/" + quote(vhost, safe=""), *parts[3:])), vhost
    finally:
        node.rabbitmqctl("delete_vhost", vhost)


async def test_quorum_queue_type_declares_quorum_queues_that_expire(broker, vhost_url):
    url, vhost = vhost_url
    connection = await rpc.connect_wire(url, name="test-quorum-rpc")
    server = rpc.RpcServer("quorum")
    try:
        await server.start(connection, queue_type="quorum")
        async with await rpc.RpcClient.create(connection) as client:
            assert (await client.call("system.ping"))["pong"] is True
        listing = await asyncio.to_thread(
            broker.node.rabbitmqctl,
            *("list_queues", "-p", vhost, "name", "type", "arguments", "--formatter", "json"),
        )
    finally:
        await server.stop(grace_s=5)
        await connection.close()
    queues = {q["name"]: q for q in json.loads(listing)}
    # Each argument is listed as [name, AMQP type, value].
    arguments = {a[0]: a[-1] for a in queues[method_queue("system.ping")]["arguments"]}
    assert queues[method_queue("system.ping")]["type"] == "quorum"
    assert arguments["x-expires"] == METHOD_QUEUE_EXPIRES_MS
    assert queues[DEAD_QUEUE]["type"] == "quorum"
