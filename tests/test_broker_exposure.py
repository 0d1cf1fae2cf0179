"""The private node is reachable from this host only and has no ``guest`` (issue 16, item 8).

Its client listeners (AMQP, AMQPS, management) bind to TASKGATE_BROKER_ADDRESS,
127.0.0.1 by default; Erlang distribution and an epmd it starts to loopback always.
Its administrator has a generated password. Where a socket listens is read from
the kernel (``listening_addresses``). The TLS listener is checked in
tests/rpc/test_wire_tls.py, management in tests/cli/test_broker_queues.py.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Iterator
from pathlib import Path

import aio_pika
import aiormq
import pytest

from infra.node import BrokerNode, NodeConfig, config_from_env
from infra.node_config import ADMIN_USER
from infra.ports import accepts_connections, free_port

from .helpers import listening_addresses

# Linux routes all of 127.0.0.0/8 to the loopback interface: an address other than
# the default that every host has.
OTHER_ADDRESS = "127.0.0.2"


@pytest.fixture
def our_node(broker) -> BrokerNode:
    if broker.node is None:
        pytest.skip("needs our own node (AMQP_URL is set)")
    return broker.node


@pytest.fixture(scope="module")
def moved_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerNode]:
    """A node configured as ``scripts/broker`` does, with TASKGATE_BROKER_ADDRESS=127.0.0.2.

    It has an epmd of its own, so the epmd checked is one this node started.
    """
    var = tmp_path_factory.mktemp("moved-var")
    config = config_from_env(
        {
            "TASKGATE_VAR": str(var),
            "TASKGATE_AMQP_PORT": str(free_port()),
            "TASKGATE_DIST_PORT": str(free_port()),
            "TASKGATE_MANAGEMENT_PORT": "",
            "ERL_EPMD_PORT": str(free_port()),
            "TASKGATE_BROKER_ADDRESS": OTHER_ADDRESS,
        }
    )
    node = BrokerNode(config)
    try:
        node.start()
        yield node
    finally:
        node.stop()


async def logs_in(url: str) -> bool:
    try:
        connection = await aio_pika.connect(url)
    except aiormq.exceptions.ProbableAuthenticationError:
        return False
    await connection.close()
    return True


def guest_url(config: NodeConfig) -> str:
    return f"amqp://guest:guest@{config.url_host}:{config.amqp_port}/"


def users(node: BrokerNode) -> dict[str, str]:
    """User name -> its tags, as rabbitmqctl lists them."""
    listed = node.rabbitmqctl("list_users", "--quiet", "--no-table-headers")
    return dict(line.split("\t", 1) for line in listed.splitlines() if line)


def is_loopback(address: str) -> bool:
    return ipaddress.ip_address(address).is_loopback


async def test_guest_cannot_log_in(our_node: BrokerNode):
    assert not await logs_in(guest_url(our_node.config))
    assert await logs_in(our_node.amqp_url)


def test_a_new_node_has_an_administrator_and_no_guest(our_node: BrokerNode):
    known = users(our_node)

    assert "guest" not in known
    assert known[ADMIN_USER] == "[administrator]"


def test_the_administrator_password_is_readable_by_its_owner_only(our_node: BrokerNode):
    config = our_node.config
    # rabbitmq.conf names it too (RabbitMQ reads the first user's password from there).
    for path in (config.admin_password_file, config.base_dir / "rabbitmq.conf"):
        assert path.stat().st_mode & 0o777 == 0o600, path
    assert len(config.admin_password) == 48


def test_the_node_listens_on_loopback_only(our_node: BrokerNode):
    config = our_node.config

    assert listening_addresses(config.amqp_port) == {"127.0.0.1"}
    assert listening_addresses(config.dist_port) == {"127.0.0.1"}
    if config.epmd_marker.exists():  # the epmd is one our node started
        assert all(map(is_loopback, listening_addresses(config.epmd_port)))


async def test_the_broker_address_setting_moves_the_client_listeners(moved_node: BrokerNode):
    config = moved_node.config

    assert config.amqp_url.startswith(f"amqp://{ADMIN_USER}:")
    assert f"@{OTHER_ADDRESS}:{config.amqp_port}/" in config.amqp_url
    assert listening_addresses(config.amqp_port) == {OTHER_ADDRESS}
    assert not accepts_connections(config.amqp_port, host="127.0.0.1")
    assert await logs_in(moved_node.amqp_url)
    # Distribution stays on loopback, where rabbitmqctl reaches the node by its name.
    assert listening_addresses(config.dist_port) == {"127.0.0.1"}
    assert config.epmd_marker.exists()
    assert all(map(is_loopback, listening_addresses(config.epmd_port)))
    assert "RabbitMQ version" in moved_node.rabbitmqctl("status")


# A restart and seven rabbitmqctl calls, each an Erlang VM's boot: on a loaded machine
# this can take longer than the suite's default timeout.
@pytest.mark.timeout(300)
async def test_a_node_made_with_guest_gets_an_administrator_at_its_next_start(
    moved_node: BrokerNode,
):
    """A node whose data predates its administrator: RabbitMQ made guest/guest then."""
    config = moved_node.config
    moved_node.rabbitmqctl("add_user", "guest", "guest")
    moved_node.rabbitmqctl("delete_user", ADMIN_USER)
    config.admin_password_file.unlink()
    old_password_in_conf = (config.base_dir / "rabbitmq.conf").read_text()

    await asyncio.to_thread(moved_node.restart)

    assert "guest" not in users(moved_node)
    assert not await logs_in(guest_url(config))
    assert await logs_in(moved_node.amqp_url)  # the new password, in the new file
    assert (config.base_dir / "rabbitmq.conf").read_text() != old_password_in_conf


def test_a_bind_address_must_be_an_ip_address(tmp_path: Path):
    with pytest.raises(ValueError, match=r"^TASKGATE_BROKER_ADDRESS: .*'localhost' is not an IP"):
        config_from_env({"TASKGATE_VAR": str(tmp_path), "TASKGATE_BROKER_ADDRESS": "localhost"})

    wildcard = NodeConfig(tmp_path, amqp_port=5672, dist_port=2, bind_address="::")
    assert wildcard.amqp_endpoint == "amqp://[::1]:5672/"  # clients here use loopback


def test_the_administrator_url_needs_a_started_node(tmp_path: Path):
    config = NodeConfig(tmp_path, amqp_port=1, dist_port=2)

    with pytest.raises(ValueError, match="has no administrator yet"):
        _ = config.amqp_url
