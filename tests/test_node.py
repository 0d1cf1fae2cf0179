"""The private RabbitMQ node used by the test suite (infra.node)."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import aio_pika
import pytest

from infra.node import BrokerNode, NodeConfig, PortInUseError
from infra.ports import free_port


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
