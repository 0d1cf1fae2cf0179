"""The autoscaling signal (issue 18, point 5): per registered kind on /metrics."""

from __future__ import annotations

import re
import time
from dataclasses import replace

import pytest

from gateway.autoscale import Bounds, desired_workers
from gateway.settings import GatewaySettings
from infra.database import open_database
from workers import kinds, outcomes

from ..helpers import eventually
from .conftest import jpeg_bytes, metrics_auth, upload

BOUNDS = Bounds(window_s=10.0, drain_s=10.0, min_workers=0, max_workers=10)


def test_desired_workers_is_littles_law_plus_the_backlog_within_bounds() -> None:
    # 0.3 tasks/s x 4 s = 1.2 slots busy; 3 ready x 4 s drained in 10 s = 1.2 more.
    assert (
        desired_workers(
            arrivals_per_s=0.3, mean_task_s=4.0, ready=3, unacked=0, concurrency=1, bounds=BOUNDS
        )
        == 3
    )
    assert (
        desired_workers(
            arrivals_per_s=0.3, mean_task_s=4.0, ready=3, unacked=0, concurrency=2, bounds=BOUNDS
        )
        == 2
    )
    assert (
        desired_workers(
            arrivals_per_s=50, mean_task_s=4.0, ready=0, unacked=0, concurrency=1, bounds=BOUNDS
        )
        == 10
    )  # the bound
    assert (
        desired_workers(
            arrivals_per_s=0, mean_task_s=4.0, ready=0, unacked=0, concurrency=1, bounds=BOUNDS
        )
        == 0
    )  # idle: scale to zero
    # No task finished in the window yet: one worker per `concurrency` tasks seen.
    assert (
        desired_workers(
            arrivals_per_s=0, mean_task_s=None, ready=5, unacked=0, concurrency=4, bounds=BOUNDS
        )
        == 2
    )
    floor = replace(BOUNDS, min_workers=1)
    assert (
        desired_workers(
            arrivals_per_s=0, mean_task_s=None, ready=0, unacked=0, concurrency=4, bounds=floor
        )
        == 1
    )


def gauge(text: str, name: str, kind: str) -> float | None:
    found = re.search(rf'^{name}{{kind="{re.escape(kind)}"}} (\S+)$', text, re.MULTILINE)
    return None if found is None else float(found.group(1))


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_metrics_give_each_registered_kind_its_backlog_rates_and_desired_workers(
    gateway_app, gateway_settings: GatewaySettings, backend: str, request: pytest.FixtureRequest
) -> None:
    if backend == "postgresql":
        gateway_settings = replace(gateway_settings, database_url=request.getfixturevalue("pg_url"))
    settings = replace(
        gateway_settings,
        autoscale_interval_s=0.1,
        autoscale_window_s=BOUNDS.window_s,
        autoscale_drain_s=BOUNDS.drain_s,
        autoscale_max_workers=BOUNDS.max_workers,
    )
    kind = settings.upload_kind
    database = await open_database(settings.database)
    try:
        # What a worker of the kind does at start (no worker runs: the tasks stay ready).
        await database.migrate(outcomes.COMPONENT, outcomes.MIGRATIONS)
        await kinds.register(database, [kind], concurrency=1)
        async with gateway_app(settings) as client:
            for _ in range(3):
                assert (await upload(client, jpeg_bytes(64, 48))).status_code == 202
            # Two tasks of 4 s each finished within the window.
            now = time.time()
            await database.write(
                lambda tx: tx.executemany(
                    "INSERT INTO task_outcomes (task_id, event, kind, finished_at, run_s)"
                    " VALUES ($1, $2, $3, $4, 4.0)",
                    [(f"done-{n}", b"{}", kind, now) for n in range(2)],
                )
            )
            headers = metrics_auth(settings)

            async def signal_ready() -> bool:
                text = (await client.get("/metrics", headers=headers)).text
                return gauge(text, "taskgate_queue_ready", kind) == 3.0 and (
                    gauge(text, "taskgate_task_mean_seconds", kind) == 4.0
                )

            await eventually(signal_ready, timeout_s=30)
            text = (await client.get("/metrics", headers=headers)).text
    finally:
        await database.close()

    assert gauge(text, "taskgate_queue_consumers", kind) == 0.0
    assert gauge(text, "taskgate_queue_unacked", kind) == 0.0
    assert gauge(text, "taskgate_task_arrival_rate", kind) == 3 / BOUNDS.window_s
    assert gauge(text, "taskgate_task_completion_rate", kind) == 2 / BOUNDS.window_s
    age = gauge(text, "taskgate_queue_oldest_ready_age_seconds", kind)
    assert age is not None and age > 0
    # Little's law, as above: 0.3/s x 4 s + 3 ready x 4 s / 10 s = 2.4 slots: 3 workers.
    assert gauge(text, "taskgate_desired_workers", kind) == 3.0
    # Only registered kinds get series.
    desired_kinds = re.findall(r'^taskgate_desired_workers\{kind="([^"]+)"\}', text, re.MULTILINE)
    assert kind in desired_kinds and f"{kind}.unregistered" not in desired_kinds
