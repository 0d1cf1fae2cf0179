"""Each process type's broker user may do what its process does, and nothing else."""

from __future__ import annotations

import asyncio

import aio_pika
import aiormq
import pytest

from workers.access import env_lines, read_env_file, role_url, setup
from workers.shop.contracts import ORDER_CREATED, ORDERS_EXCHANGE
from workers.topology import STATUS_EXCHANGE, STATUS_RECORDED_EXCHANGE, STATUS_SHARDS_EXCHANGE


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
