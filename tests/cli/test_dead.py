"""``taskgate dead``: dead letters through workers.dead, on the test broker."""

from __future__ import annotations

import aio_pika
import pytest

import rpc
from workers.topology import (
    ATTEMPT_HEADER,
    DEFAULT_QUEUE_MAX_LENGTH,
    REASON_HEADER,
    dead_queue,
    declare_kind,
    task_queue,
)

from .conftest import taskgate

# Not the default (DEFAULT_QUEUE_MAX_LENGTH): the broker refuses to redeclare a queue
# with another length, so a tool that declares the default fails on such a deployment.
OTHER_MAX_LENGTH = 1234


@pytest.fixture
async def kind(amqp_url, unique_name, request):
    """A task kind of this test's own, with its queues declared (and deleted afterwards).

    Its queue length limit is the default unless the test is marked
    ``@pytest.mark.parametrize("kind", [N], indirect=True)``.
    """
    assert DEFAULT_QUEUE_MAX_LENGTH != OTHER_MAX_LENGTH
    max_length = getattr(request, "param", DEFAULT_QUEUE_MAX_LENGTH)
    name = unique_name("cli.dead")
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        await declare_kind(await channel.get_underlay_channel(), name, max_length=max_length)
        yield name
        await channel.queue_delete(task_queue(name))
        await channel.queue_delete(dead_queue(name))
    finally:
        await connection.close()


async def bury(
    connection: rpc.WireConnection, kind: str, message_id: str | None, reason: str
) -> None:
    """Put a message in ``kind``'s dead-letter queue, as a worker that gave up on it would."""
    # rpc.wire, not aio_pika: aio_pika would make up a message_id where there is none.
    raw = await connection.raw_channel(publisher_confirms=True)
    try:
        properties = rpc.wire.Properties(
            message_id=message_id, headers={REASON_HEADER: reason, ATTEMPT_HEADER: 5}
        )
        confirm = raw.publish(b"{}", routing_key=dead_queue(kind), properties=properties)
        assert confirm is not None and await confirm
    finally:
        await raw.close()


async def queued(amqp_url: str, queue: str) -> int:
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        return declared.declaration_result.message_count or 0
    finally:
        await connection.close()


async def test_dead_list_shows_each_dead_letter_and_leaves_it(amqp_url, kind, connection):
    await bury(connection, kind, "task-1", "ValueError: boom")

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


@pytest.mark.parametrize("kind", [OTHER_MAX_LENGTH], indirect=True)
async def test_dead_replay_declares_the_kind_with_the_configured_queue_length(
    amqp_url, kind, connection
):
    await bury(connection, kind, "task-1", "ValueError: boom")
    env = {"AMQP_URL": amqp_url, "TASK_QUEUE_MAX_LENGTH": str(OTHER_MAX_LENGTH)}

    result = await taskgate("dead", "replay", kind, env=env)

    assert result.code == 0, result.stderr
    assert result.stdout == f"replayed task-1\nreplayed 1 dead letters of {kind}\n"
    assert await queued(amqp_url, task_queue(kind)) == 1
    assert await queued(amqp_url, dead_queue(kind)) == 0


async def test_dead_letters_without_a_message_id_are_named_by_their_body(
    amqp_url, kind, connection
):
    await bury(connection, kind, None, "ValueError: boom")

    listed = await taskgate("dead", "list", kind, env={"AMQP_URL": amqp_url})
    replayed = await taskgate("dead", "replay", kind, env={"AMQP_URL": amqp_url})

    assert listed.stdout == "(no message_id, body '{}')\tattempt=5\tValueError: boom\n"
    assert replayed.stdout.startswith("replayed (no message_id, body '{}')\n"), replayed.stdout


@pytest.mark.parametrize("kind", [OTHER_MAX_LENGTH], indirect=True)
async def test_dead_replay_names_the_setting_when_the_queue_length_differs(
    amqp_url, kind, connection
):
    await bury(connection, kind, "task-1", "ValueError: boom")

    result = await taskgate("dead", "replay", kind, env={"AMQP_URL": amqp_url})

    assert result.code == 1
    assert "inequivalent arg 'x-max-length'" in result.stderr
    assert f"TASK_QUEUE_MAX_LENGTH, {DEFAULT_QUEUE_MAX_LENGTH} here" in result.stderr
    assert await queued(amqp_url, dead_queue(kind)) == 1


async def test_dead_discard_removes_the_named_messages_and_keeps_the_rest_in_order(
    amqp_url, kind, connection
):
    for message_id in ("task-1", "task-2", "task-3"):
        await bury(connection, kind, message_id, "ValueError: boom")

    result = await taskgate("dead", "discard", kind, "task-2", "task-9", env={"AMQP_URL": amqp_url})
    listed = await taskgate("dead", "list", kind, env={"AMQP_URL": amqp_url})

    assert result.code == 1  # one was not there
    assert result.stdout == f"not found: task-9\ndiscarded 1 dead letters of {kind}\n"
    assert listed.stdout == (
        "task-1\tattempt=5\tValueError: boom\ntask-3\tattempt=5\tValueError: boom\n"
    )
