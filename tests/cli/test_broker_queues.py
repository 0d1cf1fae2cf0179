"""``taskgate broker`` and ``taskgate queues`` on a private node of this module's own.

The session's broker has no management plugin (it boots faster without), so this
module starts a node with it, through ``taskgate broker start``, and stops it
with ``taskgate broker stop``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aio_pika
import pytest

from infra.node import BrokerNode, NodeConfig
from infra.ports import free_port

from .conftest import taskgate

HEADER = ["name", "ready", "unacked", "consumers", "publish/s", "deliver/s"]


@pytest.fixture(scope="module")
async def node_env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[dict[str, str]]:
    """The environment of a running private node with the management plugin."""
    config = NodeConfig(
        base_dir=tmp_path_factory.mktemp("var") / "broker",
        amqp_port=free_port(),
        dist_port=free_port(),
        management_port=free_port(),
    )
    env = {
        "TASKGATE_VAR": str(config.base_dir.parent),
        "TASKGATE_AMQP_PORT": str(config.amqp_port),
        "TASKGATE_DIST_PORT": str(config.dist_port),
        "TASKGATE_MANAGEMENT_PORT": str(config.management_port),
        "AMQP_URL": config.amqp_url,
    }
    try:
        started = await taskgate("broker", "start", "--timeout", "50", env=env)
        assert started.code == 0, started.stderr
        assert f"management: http://127.0.0.1:{config.management_port}/" in started.stdout
        yield env
        stopped = await taskgate("broker", "stop", env=env)
        assert stopped.code == 0, stopped.stderr
    finally:
        # Whatever failed above, leave no node behind (a no-op once it stopped).
        await asyncio.to_thread(BrokerNode(config).stop)


@pytest.fixture(scope="module")
async def queue_with_two_messages(node_env: dict[str, str]) -> str:
    name = "cli.queues.backlog"
    connection = await aio_pika.connect(node_env["AMQP_URL"])
    try:
        channel = await connection.channel()  # publisher confirms: both are in once this returns
        await channel.declare_queue(name, durable=True)
        for body in (b"one", b"two"):
            await channel.default_exchange.publish(aio_pika.Message(body), routing_key=name)
    finally:
        await connection.close()
    return name


def rows(stdout: str) -> dict[str, list[str]]:
    """The table's rows by queue name; checks the header and that columns line up."""
    lines = stdout.splitlines()
    assert lines[0].split() == HEADER, stdout
    # Numbers align right, under the right edge of their header.
    ready_edge = lines[0].index("ready") + len("ready")
    assert all(line[ready_edge - 1] != " " for line in lines[1:]), stdout
    return {line.split()[0]: line.split()[1:] for line in lines[1:]}


async def test_broker_status_of_the_running_node(node_env):
    result = await taskgate("broker", "status", env=node_env)

    assert result.code == 0, result.stderr
    assert "running" in result.stdout


async def test_broker_status_of_a_node_that_never_started(tmp_path):
    result = await taskgate("broker", "status", env={"TASKGATE_VAR": str(tmp_path)})

    assert result.code == 3
    assert "stopped" in result.stdout


async def test_queues_from_the_management_api(node_env, queue_with_two_messages):
    result = await taskgate("queues", env=node_env)

    assert result.code == 0, result.stderr
    # Counts may read "-" until the node's first statistics round; the queue is there at once.
    assert queue_with_two_messages in rows(result.stdout)


async def test_queues_from_rabbitmqctl_without_the_management_plugin(
    node_env, queue_with_two_messages
):
    env = {**node_env, "TASKGATE_MANAGEMENT_PORT": ""}

    result = await taskgate("queues", env=env)

    assert result.code == 0, result.stderr
    assert rows(result.stdout)[queue_with_two_messages] == ["2", "0", "0", "-", "-"]


async def test_queues_will_not_ask_rabbitmqctl_about_another_broker(node_env):
    other_port = free_port()
    env = {
        **node_env,
        "TASKGATE_MANAGEMENT_PORT": "",
        "AMQP_URL": f"amqp://guest:guest@127.0.0.1:{other_port}/",
    }

    result = await taskgate("queues", env=env)

    assert result.code == 1
    assert f"$AMQP_URL names port {other_port}" in result.stderr


async def test_queues_reports_an_unreachable_management_api(node_env):
    url = f"http://127.0.0.1:{free_port()}"

    result = await taskgate("queues", "--management-url", url, env=node_env)

    assert result.code == 1
    assert f"cannot reach the management API at {url}" in result.stderr
