"""``taskgate broker``, ``scripts/broker`` and ``taskgate queues`` on a private node of
this module's own.

The session's broker has no management plugin (it boots faster without), so this
module starts a node with it, through ``taskgate broker start``, and stops it
with ``taskgate broker stop``. Its broker users are this node's own: tests here may
restart the node and rotate the users' passwords.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import aio_pika
import aiormq
import httpx
import pytest

from gateway.task_store import DatabaseTaskStore
from infra.database import open_database
from infra.node import BrokerNode, NodeConfig
from infra.node_config import ADMIN_USER
from infra.ports import free_port
from workers import claims, kinds, outcomes
from workers.access import read_env_file

from ..helpers import listening_addresses
from .conftest import REPO, CliResult, cli_env, finish, taskgate

# The module's own node boots (with management) in its first test's time.
pytestmark = pytest.mark.timeout(360)

HEADER = ["name", "ready", "unacked", "consumers", "publish/s", "deliver/s"]
KIND_HEADER = (
    "kind ready leased oldest s arrivals/s done/s mean s consumers desired workers".split()
)


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
    }
    try:
        started = await taskgate("broker", "start", "--timeout", "150", env=env)
        assert started.code == 0, started.stderr
        assert f"management: http://127.0.0.1:{config.management_port}/" in started.stdout
        env["AMQP_URL"] = config.amqp_url  # its administrator, made by that first start
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
            # Persistent: the node may have been restarted when a test counts them.
            message = aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
            await channel.default_exchange.publish(message, routing_key=name)
    finally:
        await connection.close()
    return name


def rows(stdout: str, header: list[str] = HEADER) -> dict[str, list[str]]:
    """A table's rows by their first cell (the queues table, or the one under ``header``);
    checks the header and that columns line up."""
    lines = stdout.splitlines()
    start = next(n for n, line in enumerate(lines) if line.split()[:1] == header[:1])
    lines = lines[start:]
    if "" in lines:
        lines = lines[: lines.index("")]
    assert lines[0].split() == header, stdout
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
        "AMQP_URL": f"amqp://nobody:nothing@127.0.0.1:{other_port}/",
    }

    result = await taskgate("queues", env=env)

    assert result.code == 1
    assert f"$AMQP_URL names port {other_port}" in result.stderr


async def test_queues_reports_an_unreachable_management_api(node_env):
    url = f"http://127.0.0.1:{free_port()}"

    result = await taskgate("queues", "--management-url", url, env=node_env)

    assert result.code == 1
    assert f"cannot reach the management API at {url}" in result.stderr


async def scripts_broker(*args: str, env: Mapping[str, str]) -> CliResult:
    """Run ``scripts/broker ARGS`` with this interpreter to its end."""
    process = await asyncio.create_subprocess_exec(
        "bash",
        str(REPO / "scripts" / "broker"),
        *args,
        cwd=REPO,
        env={**cli_env(env), "PYTHON": sys.executable},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    return await finish(process)


def node_config(node_env: Mapping[str, str]) -> NodeConfig:
    return NodeConfig(
        base_dir=Path(node_env["TASKGATE_VAR"]) / "broker",
        amqp_port=int(node_env["TASKGATE_AMQP_PORT"]),
        dist_port=int(node_env["TASKGATE_DIST_PORT"]),
        management_port=int(node_env["TASKGATE_MANAGEMENT_PORT"]),
    )


def users_env(node_env: Mapping[str, str]) -> Path:
    return Path(node_env["TASKGATE_VAR"]) / "broker" / "users.env"


async def logs_in(url: str) -> bool:
    try:
        connection = await aio_pika.connect(url)
    except aiormq.exceptions.ProbableAuthenticationError:
        return False
    await connection.close()
    return True


async def test_management_refuses_guest_and_answers_the_administrator(node_env):
    config = node_config(node_env)
    url = f"http://127.0.0.1:{config.management_port}/api/whoami"

    async with httpx.AsyncClient(timeout=30) as client:
        guest = await client.get(url, auth=("guest", "guest"))
        admin = await client.get(url, auth=(ADMIN_USER, config.admin_password))

    assert guest.status_code == 401
    assert admin.status_code == 200 and admin.json()["tags"] == ["administrator"]
    assert listening_addresses(config.management_port) == {"127.0.0.1"}


async def test_broker_url_prints_the_administrators_amqp_url(node_env):
    result = await taskgate("broker", "url", env=node_env)

    assert result.code == 0, result.stderr
    assert result.stdout == node_config(node_env).amqp_url + "\n"
    assert await logs_in(result.stdout.strip())


async def test_broker_start_and_restart_keep_the_users_their_processes_log_in_as(node_env):
    path = users_env(node_env)
    urls = read_env_file(path)  # made by the fixture's taskgate broker start
    written_ns = path.stat().st_mtime_ns
    assert set(urls) == {"web", "worker", "rpc"}

    for run in (
        lambda: scripts_broker("start", env=node_env),
        lambda: scripts_broker("restart", env=node_env),
        lambda: taskgate("broker", "start", env=node_env),
    ):
        result = await run()
        assert result.code == 0, result.stderr
        assert "web, worker, rpc kept (unchanged in" in result.stdout

    assert path.stat().st_mtime_ns == written_ns
    assert read_env_file(path) == urls
    for url in urls.values():
        assert await logs_in(url)  # as a process does after its connection dropped


async def test_broker_rotate_users_gives_new_passwords_and_says_what_to_restart(node_env):
    path = users_env(node_env)
    old = read_env_file(path)
    worker = await aio_pika.connect(old["worker"])
    try:
        result = await scripts_broker("rotate-users", env=node_env)
    finally:
        await worker.close()

    assert result.code == 0, result.stderr
    new = read_env_file(path)
    assert all(new[role] != old[role] for role in old)
    for role in old:
        assert not await logs_in(old[role])
        assert await logs_in(new[role])
    assert path.stat().st_mode & 0o777 == 0o600
    assert "Restart every process that logs in as them" in result.stdout
    assert "  worker  python -m workers" in result.stdout
    assert "1 connection open now" in result.stdout

    only_rpc = await taskgate("broker", "rotate-users", "--role", "rpc", env=node_env)

    assert only_rpc.code == 0, only_rpc.stderr
    assert "python -m rpc workers.services:server" in only_rpc.stdout
    after = read_env_file(path)
    assert after["rpc"] != new["rpc"]
    assert {role: after[role] for role in ("web", "worker")} == {
        role: new[role] for role in ("web", "worker")
    }


async def test_broker_start_makes_a_missing_user_or_users_file_again(node_env):
    path = users_env(node_env)
    before = read_env_file(path)
    node = BrokerNode(node_config(node_env))
    await asyncio.to_thread(node.rabbitmqctl, "delete_user", "rpc")

    recreated = await taskgate("broker", "start", env=node_env)

    assert recreated.code == 0, recreated.stderr
    assert "new passwords for rpc; web, worker kept" in recreated.stdout
    after = read_env_file(path)
    assert after["rpc"] != before["rpc"] and await logs_in(after["rpc"])
    assert {role: after[role] for role in ("web", "worker")} == {
        role: before[role] for role in ("web", "worker")
    }

    path.unlink()
    rewritten = await scripts_broker("start", env=node_env)

    assert rewritten.code == 0, rewritten.stderr
    assert all([await logs_in(url) for url in read_env_file(path).values()])


async def test_queues_shows_the_autoscaling_signal_of_each_registered_kind(node_env, tmp_path):
    store = tmp_path / "taskgate.db"
    database = await open_database(str(store))
    try:
        # What the web process and a worker of the kind set up in the store.
        await DatabaseTaskStore.open(database)
        for component, steps in (
            (claims.COMPONENT, claims.MIGRATIONS),
            (outcomes.COMPONENT, outcomes.MIGRATIONS),
        ):
            await database.migrate(component, steps)
        await kinds.register(database, ["cli.kind"], concurrency=2)
    finally:
        await database.close()

    result = await taskgate("queues", env={**node_env, "DATABASE_PATH": str(store)})

    assert result.code == 0, result.stderr
    # No queue of that kind on this node yet ("-"), nothing leased, waiting or done: 0 workers.
    signal = rows(result.stdout, KIND_HEADER)
    assert signal["cli.kind"] == ["-", "0", "0.0", "0.00", "0.00", "-", "-", "0"]
