"""The private RabbitMQ node used by the test suite (infra.node)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import aio_pika
import pytest

from infra.node import BootError, BrokerNode, NodeConfig, PortInUseError
from infra.ports import free_port, port_in_use


async def test_broker_accepts_amqp_connection(amqp_url: str) -> None:
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        assert not channel.is_closed
    finally:
        await connection.close()


def test_rabbitmqctl_status(broker) -> None:
    if broker.node is None:
        pytest.skip("needs our own node")
    assert "RabbitMQ version" in broker.node.rabbitmqctl("status")


def test_second_start_is_noop(broker) -> None:
    if broker.node is None:
        pytest.skip("needs our own node")
    pid = broker.node.pid
    assert pid is not None
    again = BrokerNode(broker.node.config)
    started = time.monotonic()
    again.start()
    assert time.monotonic() - started < 1
    assert again.is_running()
    assert again.pid == pid


def test_start_refuses_port_taken_by_foreign_listener(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as foreign:
        foreign.bind(("127.0.0.1", 0))
        foreign.listen()
        port = foreign.getsockname()[1]
        config = NodeConfig(base_dir=tmp_path / "b", amqp_port=port, dist_port=free_port())
        node = BrokerNode(config)

        with pytest.raises(PortInUseError, match=f"AMQP port {port} is already in use"):
            node.start(timeout_s=5)

        assert not node.is_running()
        assert not (tmp_path / "b").exists()  # nothing was launched or written
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            pass  # the foreign listener is still there


def own_epmd_config(base_dir: Path) -> NodeConfig:
    """A node on free ports with an epmd port of its own, so no other node shares its epmd."""
    return replace(NodeConfig.on_free_ports(base_dir), epmd_port=free_port())


class MisconfiguredNode(NodeConfig):
    """A node whose configuration file sets a setting RabbitMQ does not know: it dies at boot."""

    def write_files(self) -> None:
        super().write_files()
        (self.base_dir / "rabbitmq.conf").write_text("no_such_setting = 1\n")


def test_a_node_that_cannot_boot_says_why_in_a_few_lines(tmp_path: Path) -> None:
    config = MisconfiguredNode(
        base_dir=tmp_path / "b", amqp_port=free_port(), dist_port=free_port(), epmd_port=free_port()
    )
    node = BrokerNode(config)

    with pytest.raises(BootError) as failure:
        node.start(timeout_s=60)

    message = str(failure.value)
    assert "stopped during boot with exit status 1" in message
    assert "no_such_setting" in message
    assert len(message.splitlines()) < 20
    assert not node.is_running()
    assert not port_in_use(config.epmd_port)  # the epmd it started went with it


def test_stop_stops_the_epmd_its_start_launched(tmp_path: Path) -> None:
    config = own_epmd_config(tmp_path / "b")
    node = BrokerNode(config)
    node.start()
    try:
        assert port_in_use(config.epmd_port)
    finally:
        node.stop()

    assert not port_in_use(config.epmd_port)


def test_stop_leaves_an_epmd_someone_else_started(tmp_path: Path) -> None:
    config = own_epmd_config(tmp_path / "b")
    port = config.epmd_port
    foreign = subprocess.Popen(["epmd", "-port", str(port)])
    try:
        deadline = time.monotonic() + 10
        while not port_in_use(port):  # epmd tells no one when it listens
            assert foreign.poll() is None and time.monotonic() < deadline, "epmd did not start"
            time.sleep(0.05)
        node = BrokerNode(config)
        node.start()
        node.stop()

        assert foreign.poll() is None
        assert port_in_use(port)
    finally:
        foreign.terminate()
        foreign.wait()


def test_a_session_broker_that_cannot_boot_is_explained_once(tmp_path: Path) -> None:
    """The suite's own fixtures, in a small session whose node cannot boot."""
    shutil.copy(Path(__file__).parent / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_needing_a_broker.py").write_text(
        "def test_one(amqp_url): pass\n"
        "def test_two(amqp_url): pass\n"
        "def test_three(broker): pass\n"
        "def test_without_broker(): pass\n"
    )
    pyproject = Path(__file__).parents[1] / "pyproject.toml"
    # Erlang distribution bound to an address this host does not have: the node dies at boot.
    env = {**os.environ, "ERL_ZFLAGS": "-kernel inet_dist_use_interface {192,0,2,1}"}
    env.pop("AMQP_URL", None)
    args = ["-p", "no:cacheprovider", "-c", str(pyproject), "--basetemp", str(tmp_path / "t")]
    inner = subprocess.run(
        [sys.executable, "-m", "pytest", *args, "--rootdir", str(tmp_path), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )

    assert "1 passed, 3 errors" in inner.stdout, inner.stdout
    # The errors, before the one-line summary of each (in full where CI is set).
    errors = inner.stdout.partition("short test summary info")[0]
    assert errors.count("First errors in its log:") == 1, inner.stdout
    assert errors.count("eaddrnotavail") == 1, inner.stdout
    assert errors.count("did not boot: see the first error above") == 2, inner.stdout
