"""``taskgate migrate-queues``: classic retry tiers and dead queues of an older taskgate
become quorum queues, on the test broker, and keep every message."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

import rpc
from infra.node import BrokerNode, NodeConfig
from infra.ports import free_port
from rpc.publish import publish_confirmed
from rpc.topology import DEAD_QUEUE as RPC_DEAD_QUEUE
from rpc.wire import ChannelClosed, Delivery, Properties
from taskgate.migrate import HOLDING_SUFFIX, ROUTE_HEADER, migrate
from workers.topology import (
    REASON_HEADER,
    TASKS_EXCHANGE,
    declare_dead_queue,
    declare_retry_tier,
    retry_tier,
)

from ..cli.conftest import taskgate

# A delay no message reaches during the test, and no other test's tier.
DELAY_MS = 3_600_000 + secrets.randbelow(1_000_000)


@pytest.fixture
async def old_queues(
    connection: rpc.WireConnection, pika_connection, unique_name
) -> AsyncIterator[tuple[str, str]]:
    """A retry tier and a dead queue as the classic queues taskgate declared before;
    deleted afterwards, with their holding queues."""
    tier = retry_tier(DELAY_MS)
    dead = unique_name("kind") + ".dead"
    raw = await connection.raw_channel()
    await raw.exchange_declare(tier, exchange_type="fanout", durable=True)
    arguments = {"x-message-ttl": DELAY_MS, "x-dead-letter-exchange": TASKS_EXCHANGE}
    await raw.queue_declare(tier, durable=True, arguments=arguments)
    await raw.queue_bind(tier, tier)
    await raw.queue_declare(dead, durable=True)
    await raw.close()
    yield tier, dead
    channel = await pika_connection.channel()
    for queue in (tier, dead, tier + HOLDING_SUFFIX, dead + HOLDING_SUFFIX):
        await channel.queue_delete(queue)
    await channel.exchange_delete(tier)
    await channel.close()


async def publish(
    connection: rpc.WireConnection, exchange: str, routing_key: str, messages: list[Properties]
) -> None:
    raw = await connection.raw_channel(publisher_confirms=True)
    try:
        for number, properties in enumerate(messages):
            await publish_confirmed(
                raw,
                f"body {number}".encode(),
                exchange=exchange,
                routing_key=routing_key,
                properties=properties,
            )
    finally:
        await raw.close()


async def take_all(connection: rpc.WireConnection, queue: str) -> list[Delivery]:
    raw = await connection.raw_channel()
    try:
        messages = []
        while (message := await raw.basic_get(queue, no_ack=True)) is not None:
            messages.append(message)
        return messages
    finally:
        await raw.close()


async def refuses(connection: rpc.WireConnection, declare) -> bool:  # type: ignore[no-untyped-def]
    """True if the broker refuses ``declare`` (406: the queue there differs)."""
    raw = await connection.raw_channel()
    try:
        await declare(raw)
    except ChannelClosed as exc:
        assert exc.code == 406, exc
        return True
    await raw.close()
    return False


async def exists(connection: rpc.WireConnection, queue: str) -> bool:
    raw = await connection.raw_channel()
    try:
        await raw.queue_declare(queue, passive=True)
    except ChannelClosed:
        return False
    await raw.close()
    return True


def dead_letters(count: int) -> list[Properties]:
    return [
        Properties(
            message_id=f"task-{n}" if n else None,  # one without: a foreign message
            headers={REASON_HEADER: f"reason {n}"},
            delivery_mode=2,
            content_type="application/json",
        )
        for n in range(count)
    ]


async def test_migrate_queues_turns_old_classic_queues_into_quorum_ones_keeping_every_message(
    connection, old_queues, amqp_url
):
    tier, dead = old_queues
    await publish(connection, "", dead, dead_letters(3))
    await publish(connection, tier, "images.thumbnail", [Properties(message_id="r1")])
    await publish(connection, tier, "orders.email", [Properties(message_id="r2")])
    assert await refuses(connection, lambda ch: declare_dead_queue(ch, dead))
    assert await refuses(connection, lambda ch: declare_retry_tier(ch, DELAY_MS))

    result = await taskgate("migrate-queues", tier, dead, env={"AMQP_URL": amqp_url})

    assert result.code == 0, result.stderr
    assert result.stdout == (
        f"{tier}: now a quorum queue, with its 2 messages\n"
        f"{dead}: now a quorum queue, with its 3 messages\n"
    )
    assert not await refuses(connection, lambda ch: declare_dead_queue(ch, dead))
    assert not await refuses(connection, lambda ch: declare_retry_tier(ch, DELAY_MS))
    assert not await exists(connection, tier + HOLDING_SUFFIX)
    assert not await exists(connection, dead + HOLDING_SUFFIX)

    letters = await take_all(connection, dead)
    assert [m.body for m in letters] == [b"body 0", b"body 1", b"body 2"]
    assert [m.properties.message_id for m in letters] == [None, "task-1", "task-2"]
    assert [m.properties.headers[REASON_HEADER] for m in letters] == [
        "reason 0",
        "reason 1",
        "reason 2",
    ]
    assert all(ROUTE_HEADER not in m.properties.headers for m in letters)
    assert {m.properties.content_type for m in letters} == {"application/json"}
    # A retry keeps its kind as routing key: when its delay is over, it goes back there.
    retries = await take_all(connection, tier)
    assert [(m.properties.message_id, m.routing_key) for m in retries] == [
        ("r1", "images.thumbnail"),
        ("r2", "orders.email"),
    ]

    again = await taskgate("migrate-queues", tier, dead, env={"AMQP_URL": amqp_url})
    assert again.code == 0, again.stderr
    assert again.stdout == f"{tier}: up to date\n{dead}: up to date\n"


async def test_migrate_finishes_a_move_that_was_interrupted(connection, old_queues):
    """A crash after the queue was declared anew leaves its messages in the holding queue."""
    _, dead = old_queues
    raw = await connection.raw_channel()
    await raw.queue_delete(dead)
    await raw.close()
    holding = dead + HOLDING_SUFFIX
    raw = await connection.raw_channel()
    await raw.queue_declare(holding, durable=True, arguments={"x-queue-type": "quorum"})
    await raw.close()
    await publish(connection, "", holding, dead_letters(2))
    raw = await connection.raw_channel()
    await declare_dead_queue(raw, dead)
    await raw.close()

    assert await migrate(connection, dead) == 2

    assert [m.body for m in await take_all(connection, dead)] == [b"body 0", b"body 1"]
    assert not await exists(connection, holding)


async def test_migrate_queues_refuses_a_queue_that_is_neither_a_tier_nor_a_dead_queue(amqp_url):
    result = await taskgate("migrate-queues", "tasks.images.thumbnail", env={"AMQP_URL": amqp_url})

    assert result.code == 2
    assert "not a retry tier or dead-letter queue: tasks.images.thumbnail" in result.stderr


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerNode]:
    """A node of this module's own where ``taskgate`` finds it (TASKGATE_VAR/broker), so
    the command can list its queues with rabbitmqctl."""
    base_dir: Path = tmp_path_factory.mktemp("var") / "broker"
    node = BrokerNode(NodeConfig(base_dir=base_dir, amqp_port=free_port(), dist_port=free_port()))
    try:
        node.start()
        yield node
    finally:
        node.stop()


async def test_migrate_queues_without_names_finds_the_old_queues_and_leaves_others_alone(node):
    config = node.config
    env = {
        "TASKGATE_VAR": str(config.base_dir.parent),
        "TASKGATE_AMQP_PORT": str(config.amqp_port),
        "TASKGATE_DIST_PORT": str(config.dist_port),
        "TASKGATE_MANAGEMENT_PORT": "",  # rabbitmqctl lists the queues
        "AMQP_URL": config.amqp_url,
    }
    connection = await rpc.connect_wire(config.amqp_url, name="test")
    try:
        raw = await connection.raw_channel()
        await raw.exchange_declare(retry_tier(1000), exchange_type="fanout", durable=True)
        await raw.queue_declare(retry_tier(1000), durable=True, arguments={"x-message-ttl": 1000})
        await raw.queue_bind(retry_tier(1000), retry_tier(1000))
        for classic in ("tasks.k.dead", "orders.email.dead", RPC_DEAD_QUEUE, "tasks.retry.x"):
            await raw.queue_declare(classic, durable=True)
        await raw.close()
        await publish(connection, "", "tasks.k.dead", dead_letters(1))

        result = await taskgate("migrate-queues", env=env)

        assert result.code == 0, result.stderr
        assert result.stdout == (
            "orders.email.dead: now a quorum queue, with its 0 messages\n"
            "tasks.k.dead: now a quorum queue, with its 1 message\n"
            f"{retry_tier(1000)}: now a quorum queue, with its 0 messages\n"
        )
        assert not await refuses(connection, lambda ch: declare_dead_queue(ch, "tasks.k.dead"))
        # rpc.dead is the RPC servers' own, still classic as they declare it.
        assert await refuses(connection, lambda ch: declare_dead_queue(ch, RPC_DEAD_QUEUE))
    finally:
        await connection.close()
