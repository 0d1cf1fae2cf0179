"""A private 3-node RabbitMQ cluster for the session, and the gateway fixtures pointed at it.

Every process gets the AMQP_URL naming all three nodes, and rpc servers declare their
queues as quorum queues (RPC_QUEUE_TYPE=quorum), as a cluster deployment does. The tests
here are marked ``cluster`` and left out of the default run (a cluster takes 30-60 s to
boot on a busy 2-core machine): ``pytest -m cluster tests/cluster``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from infra.cluster import BrokerCluster
from workers.access import create_users

from ..gateway.conftest import *  # noqa: F403  (the gateway, worker and rpc process fixtures)

# What the first test of a run may spend on the session's cluster booting (a busy 2-core
# machine took over 220 s), on top of its own time limit.
BOOT_TIMEOUT_S = 360


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerCluster]:
    """Three nodes on free ports, formed into one cluster; stopped after the session."""
    cluster = BrokerCluster.on_free_ports(tmp_path_factory.mktemp("cluster"))
    try:
        cluster.start(timeout_s=BOOT_TIMEOUT_S)
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def cluster_role_urls(cluster: BrokerCluster) -> dict[str, str]:
    """The per-process users (users are cluster-wide), each URL naming every node."""
    urls = create_users(cluster.rabbitmqctl, cluster.nodes[0].amqp_url)
    return {role: cluster.spread(url) for role, url in urls.items()}


@pytest.fixture
def role_urls(cluster_role_urls: dict[str, str]) -> dict[str, str]:
    """The gateway fixtures' users, on the cluster."""
    return cluster_role_urls


@pytest.fixture
def amqp_url(cluster: BrokerCluster) -> str:
    return cluster.amqp_url


@pytest.fixture(autouse=True)
def quorum_rpc_queues(monkeypatch: pytest.MonkeyPatch) -> None:
    """The processes the tests start (they inherit our environment) run as on a cluster."""
    monkeypatch.setenv("RPC_QUEUE_TYPE", "quorum")
