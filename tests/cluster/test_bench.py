"""The benchmarks' cluster mode (issue 17, point 4): their tiny runs measure the single
node and the session's cluster side by side.

Run: ``.venv/bin/python -m pytest -m cluster tests/cluster/test_bench.py``.
"""

from __future__ import annotations

import pytest

from infra.cluster import BrokerCluster

from ..bench.test_tiny import TINY_TIMEOUT_S, assert_measured, run_tiny
from ..conftest import BrokerHandle
from .conftest import BOOT_TIMEOUT_S

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(BOOT_TIMEOUT_S + 3 * TINY_TIMEOUT_S)]


def test_tasks_tiny_runs_tasks_on_the_node_and_on_the_cluster(
    broker: BrokerHandle, cluster: BrokerCluster
) -> None:
    measured = run_tiny(
        "tasks.py",
        broker.amqp_url,
        options=["--no-peers", "--cluster"],
        AMQP_CLUSTER_URL=cluster.amqp_url,
    )
    assert_measured(
        measured,
        {"celery.tasks_per_s", "taskgate.tasks_per_s", "cluster.taskgate.tasks_per_s"},
    )


def test_sse_tiny_delivers_events_on_the_node_and_on_the_cluster(
    broker: BrokerHandle, cluster: BrokerCluster
) -> None:
    measured = run_tiny(
        "sse.py", broker.amqp_url, options=["--cluster"], AMQP_CLUSTER_URL=cluster.amqp_url
    )
    assert_measured(
        measured,
        {
            f"{side}.{what}"
            for side in ("baseline", "taskgate", "cluster")
            for what in ("streams_held", "deliveries")
        }
        | {"broker.ceiling_events_per_s"},
    )
