"""``taskgate dead``: dead letters through workers.dead, on the test broker."""

from __future__ import annotations

import aio_pika
import pytest

from workers.topology import ATTEMPT_HEADER, REASON_HEADER, dead_queue, declare_kind, task_queue

from .conftest import taskgate


@pytest.fixture
async def kind(amqp_url, unique_name):
    """A task kind of this test's own, with its queues declared (and deleted afterwards)."""
    name = unique_name("cli.dead")
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        await declare_kind(await channel.get_underlay_channel(), name)
        yield name
        await channel.queue_delete(task_queue(name))
        await channel.queue_delete(dead_queue(name))
    finally:
        await connection.close()


async def bury(amqp_url: str, kind: str, message_id: str, reason: str) -> None:
    """Put a message in ``kind``'s dead-letter queue, as a worker that gave up on it would."""
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        message = aio_pika.Message(
            b"{}",
            message_id=message_id,
            headers={REASON_HEADER: reason, ATTEMPT_HEADER: 5},
        )
        await channel.default_exchange.publish(message, routing_key=dead_queue(kind))
    finally:
        await connection.close()


async def test_dead_list_shows_each_dead_letter_and_leaves_it(amqp_url, kind):
    await bury(amqp_url, kind, "task-1", "ValueError: boom")

    first = await taskgate("dead", "list", kind, env={"AMQP_URL": amqp_url})
    again = await taskgate("dead", "list", kind, env={"AMQP_URL": amqp_url})

    assert first.code == 0, first.stderr
    assert first.stdout == "task-1\tattempt=5\tValueError: boom\n"
    assert again.stdout == first.stdout


async def test_dead_list_of_an_empty_queue(amqp_url, kind):
    result = await taskgate("dead", "list", kind, env={"AMQP_URL": amqp_url})

    assert result.code == 0, result.stderr
    assert result.stdout == f"no dead letters for {kind}\n"


async def test_dead_list_of_a_kind_without_queue_fails(amqp_url, unique_name):
    missing = unique_name("never.declared")

    result = await taskgate("dead", "list", missing, env={"AMQP_URL": amqp_url})

    assert result.code == 1
    assert f"no dead-letter queue for {missing!r}" in result.stderr
