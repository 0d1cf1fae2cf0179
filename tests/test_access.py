"""Each process type's broker user may do what its process does, and nothing else."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import aio_pika
import aiormq
import pytest

from rpc import RpcServer
from rpc.connection import connect_wire
from rpc.topology import DEAD_EXCHANGE as RPC_DEAD_EXCHANGE
from rpc.topology import DEAD_QUEUE as RPC_DEAD_QUEUE
from rpc.topology import method_queue, queue_options
from rpc.wire import BrokerError, Channel, Delivery, Properties, WireConnection
from workers.access import env_lines, read_env_file, role_url, setup
from workers.senders import Senders, status_senders, task_senders
from workers.shop.consumers import OrderFulfilment
from workers.shop.contracts import ORDER_CREATED, ORDER_QUEUES, ORDERS_EXCHANGE
from workers.topology import (
    DEFAULT_STATUS_SHARDS,
    STATUS_DEAD_QUEUE,
    STATUS_EXCHANGE,
    STATUS_RECORDED_EXCHANGE,
    STATUS_SHARDS_EXCHANGE,
    TASKS_EXCHANGE,
    dead_queue,
    declare_event_queue,
    declare_kind,
    declare_retry_tier,
    declare_status,
    retry_tier,
    status_journal,
    task_queue,
)


@pytest.fixture(autouse=True)
def _needs_our_broker(broker):
    if broker.node is None:
        pytest.skip("the least-privilege users exist on our own node only")


async def publish(url: str, exchange: str, routing_key: str, *, declare: str) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        target = await channel.declare_exchange(exchange, declare, durable=True)
        await target.publish(aio_pika.Message(b"{}"), routing_key=routing_key)


async def test_a_worker_cannot_publish_an_order(role_urls):
    with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
        await publish(role_urls["worker"], ORDERS_EXCHANGE, ORDER_CREATED, declare="topic")


async def test_the_gateway_cannot_forge_status_events(role_urls):
    with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
        await publish(
            role_urls["web"], STATUS_EXCHANGE, "images.thumbnail.x.succeeded", declare="topic"
        )


async def test_the_gateway_cannot_forge_status_events_through_the_journal_shards(role_urls):
    # It may bind to status.shards (write), but the exchange is internal: no publish reaches it.
    connection = await aio_pika.connect(role_urls["web"])
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await channel.declare_exchange(
            STATUS_SHARDS_EXCHANGE,
            "x-consistent-hash",
            durable=True,
            internal=True,
            arguments={"hash-property": "correlation_id"},
        )
        raw = await channel.get_underlay_channel()  # aio-pika refuses before the broker would
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
            await raw.basic_publish(b"{}", exchange=STATUS_SHARDS_EXCHANGE, routing_key="x")


async def test_a_worker_cannot_publish_a_recorded_event(role_urls):
    with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
        await publish(
            role_urls["worker"], STATUS_RECORDED_EXCHANGE, "t.1.succeeded", declare="fanout"
        )


async def test_an_rpc_server_cannot_consume_tasks(role_urls, amqp_url, unique_name):
    queue_name = f"tasks.{unique_name('kind')}"
    admin = await aio_pika.connect(amqp_url)
    async with admin:
        admin_channel = await admin.channel()
        queue = await admin_channel.declare_queue(queue_name, auto_delete=True)
        connection = await aio_pika.connect(role_urls["rpc"])
        async with connection:
            channel = await connection.channel()
            raw = await channel.get_underlay_channel()

            async def ignore(message: aiormq.abc.DeliveredMessage) -> None:
                pass

            with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
                await raw.basic_consume(queue_name, ignore)
        await queue.delete()


async def test_the_processes_do_not_use_the_guest_user(role_urls, amqp_url):
    assert {url.split("//")[1].split(":")[0] for url in role_urls.values()} == {
        "web",
        "worker",
        "rpc",
    }
    assert role_url(amqp_url, "web", "p@ss/word").startswith("amqp://web:p%40ss%2Fword@")


async def test_setup_keeps_the_users_whose_passwords_still_log_in(broker, role_urls, tmp_path):
    """What ``scripts/broker start|restart`` runs, while processes are logged in as the users."""
    env_file = tmp_path / "users.env"
    env_file.write_text(env_lines(role_urls))
    written_ns = env_file.stat().st_mtime_ns

    said = await asyncio.to_thread(setup, broker.node.rabbitmqctl, broker.amqp_url, env_file)

    assert said == f"broker users: web, worker, rpc kept (unchanged in {env_file})"
    assert env_file.stat().st_mtime_ns == written_ns
    assert read_env_file(env_file) == role_urls
    for url in role_urls.values():
        connection = await aio_pika.connect(url)  # still logs in
        await connection.close()


# --- Every role x every queue of the project: publish into it (through amq.default, and
# through its own exchange), consume it, delete it. Each is refused by the broker (403), or
# is what the role's process does; a publish through amq.default, which every role keeps
# (docs/security.md), lands, and the queue's consumer takes it only from the roles it
# trusts (user_id, workers/senders.py; tests/workers and tests/gateway run the consumers).

ACCESS_REFUSED = 403
RETRY_DELAY_MS = 3_600_000  # a tier of this module's own: what lands there stays to be taken
ACCESS_KIND = f"access.{uuid.uuid4().hex[:8]}"
RPC_METHOD_QUEUE = method_queue(f"access.{uuid.uuid4().hex[:8]}")
WEB, WORKER, RPC = "web", "worker", "rpc"
JOURNALS = tuple(status_journal(shard) for shard in range(DEFAULT_STATUS_SHARDS))
Declare = Callable[[Channel], Awaitable[None]]


@dataclass(frozen=True)
class QueueAccess:
    """A queue of the project, and which role may do what with it."""

    name: str
    declare: Declare
    # Its own way in besides amq.default: (exchange, routing key, the queues it may land in).
    route: tuple[str, str, tuple[str, ...]] | None
    publishers: frozenset[str]  # roles whose process publishes into it through ``route``
    readers: frozenset[str]
    declarers: frozenset[str]  # configure: declare, and so delete
    # Its consumer's check, and the roles it takes messages from (None: nothing consumes
    # it by itself: a dead queue, or an RPC method's, which anyone with a user may call).
    senders: Senders | None
    trusted: frozenset[str] = frozenset()

    def __str__(self) -> str:
        return self.name


async def _declare_kind(channel: Channel) -> None:
    await declare_kind(channel, ACCESS_KIND)


async def _declare_tier(channel: Channel) -> None:
    await declare_retry_tier(channel, RETRY_DELAY_MS)


async def _declare_status(channel: Channel) -> None:
    await declare_status(channel)


async def _declare_orders(channel: Channel) -> None:
    for queue in ORDER_QUEUES:
        await declare_event_queue(
            channel, queue, exchange=ORDERS_EXCHANGE, routing_key=ORDER_CREATED
        )


async def _declare_method(channel: Channel) -> None:
    await channel.queue_declare(RPC_METHOD_QUEUE, **queue_options("classic", method=True))


async def _declare_rpc_dead(channel: Channel) -> None:
    await channel.exchange_declare(RPC_DEAD_EXCHANGE, exchange_type="fanout", durable=True)
    await channel.queue_declare(RPC_DEAD_QUEUE, **queue_options("classic", method=False))
    await channel.queue_bind(RPC_DEAD_QUEUE, RPC_DEAD_EXCHANGE)


def _order_senders(queue: str) -> Senders:
    (subscriber,) = [s for s in OrderFulfilment(None, None).subscribers() if s.queue == queue]  # type: ignore[arg-type]
    return Senders(subscriber.senders, WORKER)


QUEUES = (
    QueueAccess(
        task_queue(ACCESS_KIND),
        _declare_kind,
        (TASKS_EXCHANGE, ACCESS_KIND, (task_queue(ACCESS_KIND),)),
        publishers=frozenset({WEB, WORKER}),  # uploads; dead letters replayed as the worker
        # The gateway declares it, with a dead-letter exchange: RabbitMQ then asks for read.
        readers=frozenset({WORKER, WEB}),
        declarers=frozenset({WEB, WORKER}),
        senders=task_senders(WORKER),
        trusted=frozenset({WEB, WORKER}),
    ),
    QueueAccess(
        dead_queue(ACCESS_KIND),
        _declare_kind,
        None,
        publishers=frozenset(),
        # taskgate dead replay, as the worker; the admin view's show, discard and replay
        readers=frozenset({WORKER, WEB}),
        declarers=frozenset({WEB, WORKER}),
        senders=None,
    ),
    QueueAccess(
        retry_tier(RETRY_DELAY_MS),
        _declare_tier,
        (retry_tier(RETRY_DELAY_MS), ACCESS_KIND, (retry_tier(RETRY_DELAY_MS),)),
        publishers=frozenset({WORKER}),
        # The tier's exchange has the queue's name: binding to it (read) reads the queue too.
        readers=frozenset({WORKER}),
        declarers=frozenset({WORKER}),
        senders=task_senders(WORKER),  # back in its task queue when its delay is over
        trusted=frozenset({WEB, WORKER}),
    ),
    QueueAccess(
        status_journal(0),
        _declare_status,
        (STATUS_EXCHANGE, f"{ACCESS_KIND}.t.succeeded", JOURNALS),
        publishers=frozenset({WORKER}),
        # A worker declares the shards too, with a dead-letter exchange: RabbitMQ asks for read.
        readers=frozenset({WEB, WORKER}),
        declarers=frozenset({WEB, WORKER}),
        senders=status_senders(WEB),
        trusted=frozenset({WORKER}),
    ),
    QueueAccess(
        STATUS_DEAD_QUEUE,
        _declare_status,
        None,
        publishers=frozenset(),
        readers=frozenset({WEB}),  # the admin view's show and discard
        declarers=frozenset({WEB, WORKER}),
        senders=None,
    ),
    *(
        QueueAccess(
            queue,
            _declare_orders,
            (ORDERS_EXCHANGE, ORDER_CREATED, ORDER_QUEUES),
            publishers=frozenset({WEB}),
            readers=frozenset({WORKER, WEB}),  # as for the task queue
            declarers=frozenset({WEB, WORKER}),
            senders=_order_senders(queue),
            trusted=frozenset({WEB}),
        )
        for queue in ORDER_QUEUES
    ),
    *(
        QueueAccess(
            f"{queue}.dead",
            _declare_orders,
            None,
            publishers=frozenset(),
            readers=frozenset({WEB}),  # likewise
            declarers=frozenset({WEB, WORKER}),
            senders=None,
        )
        for queue in ORDER_QUEUES
    ),
    QueueAccess(
        RPC_METHOD_QUEUE,
        _declare_method,
        None,  # amq.default is its way in
        publishers=frozenset(),
        readers=frozenset({RPC}),
        declarers=frozenset({RPC}),
        senders=None,
    ),
    QueueAccess(
        RPC_DEAD_QUEUE,
        _declare_rpc_dead,
        (RPC_DEAD_EXCHANGE, "", (RPC_DEAD_QUEUE,)),
        publishers=frozenset({RPC}),
        readers=frozenset({RPC}),  # the exchange it binds has the queue's name
        declarers=frozenset({RPC}),
        senders=None,
    ),
)
ROLE_QUEUE = [
    pytest.param(role, queue, id=f"{role}-{queue}")
    for queue in QUEUES
    for role in (WEB, WORKER, RPC)
]
ROUTED = [p for p in ROLE_QUEUE if p.values[1].route is not None]


@pytest.fixture(scope="module")
async def admin(broker) -> AsyncIterator[WireConnection]:
    """A connection as the node's administrator, with every queue of the matrix declared."""
    if broker.node is None:
        pytest.skip("the least-privilege users exist on our own node only")
    connection = await connect_wire(broker.amqp_url, name="test-access-admin")
    raw = await connection.raw_channel()
    for declare in {queue.declare for queue in QUEUES}:
        await declare(raw)
    # status.dead keeps what the whole suite dead-lettered, with nothing consuming it: taking
    # a message put in behind that backlog (large poison bodies among it) can outlast a wait.
    await raw.queue_purge(STATUS_DEAD_QUEUE)
    yield connection
    for name in (
        task_queue(ACCESS_KIND),
        dead_queue(ACCESS_KIND),
        retry_tier(RETRY_DELAY_MS),
        RPC_METHOD_QUEUE,
    ):
        await raw.queue_delete(name)
    await connection.close()


@pytest.fixture(scope="module")
async def as_role(broker) -> AsyncIterator[dict[str, WireConnection]]:
    """A connection per role, logged in as its user."""
    if broker.node is None:
        pytest.skip("the least-privilege users exist on our own node only")
    connections = {
        role: await connect_wire(url, name=f"test-access-{role}")
        for role, url in broker.role_urls.items()
    }
    yield connections
    for connection in connections.values():
        await connection.close()


async def _refused(operation: Awaitable[object]) -> bool:
    """True if the broker refused ``operation`` (403); False if it did it."""
    try:
        await operation
    except BrokerError as exc:
        if exc.code == ACCESS_REFUSED:
            return True
        raise
    return False


async def _publish(connection: WireConnection, exchange: str, routing_key: str) -> tuple[bool, str]:
    """Publish a message as ``connection``'s user: (refused, its message_id)."""
    message_id = uuid.uuid4().hex
    raw = await connection.raw_channel(publisher_confirms=True)
    properties = Properties(message_id=message_id, correlation_id=message_id, delivery_mode=2)
    try:
        refused = await _refused(
            raw.basic_publish(
                b"{}", exchange=exchange, routing_key=routing_key, properties=properties
            )
        )
    finally:
        if raw.closed is None:
            await raw.close()
    return refused, message_id


async def _take_back(admin: WireConnection, queues: tuple[str, ...], message_id: str) -> Delivery:
    """The message ``message_id`` from one of ``queues``, acked; the others stay.

    By consuming: the journal shards have a single active consumer, where basic.get is refused.
    """
    raw = await admin.raw_channel()
    found: asyncio.Future[Delivery] = asyncio.get_running_loop().create_future()

    def take(message: Delivery) -> None:
        if message.properties.message_id == message_id and not found.done():
            raw.basic_ack(message.delivery_tag)
            found.set_result(message)

    try:
        for queue in queues:
            await raw.basic_consume(queue, take)
        return await asyncio.wait_for(found, 30)
    finally:
        await raw.close()  # the others go back


async def _still_there(admin: WireConnection, queue: QueueAccess) -> None:
    """Declare ``queue`` again if an operation that was allowed deleted it."""
    raw = await admin.raw_channel()
    try:
        await raw.queue_declare(queue.name, passive=True)
    except BrokerError:
        raw = await admin.raw_channel()
        await queue.declare(raw)
    await raw.close()


@pytest.mark.parametrize(("role", "queue"), ROLE_QUEUE)
async def test_a_message_put_in_through_the_default_exchange_is_taken_only_from_its_senders(
    admin, as_role, role, queue
):
    refused, message_id = await _publish(as_role[role], "", queue.name)

    assert not refused  # every role writes to amq.default (docs/security.md says why)
    landed = await _take_back(admin, (queue.name,), message_id)
    await _still_there(admin, queue)  # an RPC method's queue goes with its last consumer
    assert landed.properties.user_id == role  # stamped by our client, checked by the broker
    if queue.senders is not None:
        assert (queue.senders.refusal(landed.properties) is None) == (role in queue.trusted)


@pytest.mark.parametrize(("role", "queue"), ROUTED)
async def test_only_its_publishers_reach_a_queue_through_its_exchange(admin, as_role, role, queue):
    exchange, routing_key, lands_in = queue.route

    refused, message_id = await _publish(as_role[role], exchange, routing_key)

    assert refused == (role not in queue.publishers)
    if not refused:
        await _take_back(admin, lands_in, message_id)
        await _still_there(admin, queue)


@pytest.mark.parametrize(("role", "queue"), ROLE_QUEUE)
async def test_only_its_readers_consume_a_queue(admin, as_role, role, queue):
    raw = await as_role[role].raw_channel()

    refused = await _refused(raw.basic_consume(queue.name, lambda message: None))

    assert refused == (role not in queue.readers)
    if raw.closed is None:
        await raw.close()  # anything it got goes back
    await _still_there(admin, queue)  # an RPC method's queue goes with its last consumer


@pytest.mark.parametrize(("role", "queue"), ROLE_QUEUE)
async def test_only_its_declarers_delete_a_queue(admin, as_role, role, queue):
    # Quorum queues take neither if-empty nor if-unused: an allowed delete deletes, and the
    # queue is declared again at once, as its processes would.
    raw = await as_role[role].raw_channel()

    refused = await _refused(raw.queue_delete(queue.name))

    assert refused == (role not in queue.declarers)
    if raw.closed is None:
        await raw.close()
    await _still_there(admin, queue)


DECLARES = [p for p in ROLE_QUEUE if p.values[0] in p.values[1].declarers]


@pytest.mark.parametrize(("role", "queue"), DECLARES)
async def test_each_declarer_creates_its_queue_as_its_process_does(admin, as_role, role, queue):
    # Any of a queue's processes may start first on a new broker: a worker before any gateway
    # must still make the journal shards (RabbitMQ asks more to create a queue than to
    # declare one that exists: read on it, if it dead-letters).
    raw = await admin.raw_channel()
    await raw.queue_delete(queue.name)
    await raw.close()
    raw = await as_role[role].raw_channel()

    refused = await _refused(queue.declare(raw))

    assert not refused
    if raw.closed is None:
        await raw.close()
    await _still_there(admin, queue)


async def test_a_client_in_another_language_with_its_own_user_calls_through_the_default_exchange(
    broker, unique_name
):
    """RabbitMQ tutorial 6, as plain JSON: an exclusive reply queue, a request to ``""``."""
    client_user, password = f"client-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    await asyncio.to_thread(broker.node.rabbitmqctl, "add_user", client_user, password)
    await asyncio.to_thread(
        broker.node.rabbitmqctl,
        "set_permissions",
        "-p",
        "/",
        client_user,
        r"^amq\.gen-.*$",
        r"^amq\.default$",
        r"^amq\.gen-.*$",
    )
    server = RpcServer(unique_name("server"))
    serving = await connect_wire(broker.role_urls["rpc"], name="test-rpc-server")
    await server.start(serving)
    client = await aio_pika.connect(role_url(broker.amqp_url, client_user, password))
    try:
        channel = await client.channel()
        replies = await channel.declare_queue(exclusive=True)
        await channel.default_exchange.publish(
            aio_pika.Message(b"{}", reply_to=replies.name, correlation_id="c-1"),
            routing_key=method_queue("system.ping"),
        )
        async with replies.iterator(timeout=30) as received:
            reply = await anext(received)
            await reply.ack()
    finally:
        await client.close()
        await server.stop(grace_s=1)
        await serving.close()
        await asyncio.to_thread(broker.node.rabbitmqctl, "delete_user", client_user)

    assert reply.correlation_id == "c-1"
    assert reply.user_id == "rpc"  # who answered, checked by the broker
    assert json.loads(reply.body)["status"] == "ok"
