"""``/metrics`` on the web port: only with METRICS_TOKEN, and with bounded labels (issue 16, 14).

Before, anyone could read it, and each new kind in a status event (any publisher's
text) added a series for the life of the process: 300 kinds made 67 KB.
"""

from __future__ import annotations

import uuid
from dataclasses import replace

from prometheus_client import REGISTRY

from gateway.metrics import MAX_KIND_LABELS, OTHER_KIND
from workers.messages import new_event
from workers.status import publish_status

from ..helpers import eventually
from .test_recorder import running, status_channel

TOKEN = "metrics-" + uuid.uuid4().hex


async def test_metrics_on_the_web_port_are_404_without_a_token_setting(
    gateway_app, gateway_settings
):
    async with gateway_app(replace(gateway_settings, metrics_token=None), user=None) as client:
        answer = await client.get("/metrics", headers={"Authorization": "Bearer anything"})

    assert answer.status_code == 404


async def test_metrics_on_the_web_port_ask_for_the_token(gateway_app, gateway_settings):
    async with gateway_app(replace(gateway_settings, metrics_token=TOKEN), user=None) as client:
        anonymous = await client.get("/metrics")
        wrong = await client.get("/metrics", headers={"Authorization": "Bearer " + TOKEN[:-1]})
        right = await client.get("/metrics", headers={"Authorization": "Bearer " + TOKEN})

    assert (anonymous.status_code, wrong.status_code) == (401, 401)
    assert right.status_code == 200
    assert "taskgate_sse_connections" in right.text


def finished_kinds() -> set[str]:
    return {
        sample.labels["kind"]
        for metric in REGISTRY.collect()
        if metric.name == "taskgate_tasks_finished"
        for sample in metric.samples
        if sample.name == "taskgate_tasks_finished_total"
    }


def finished_total() -> float:
    return sum(
        sample.value
        for metric in REGISTRY.collect()
        if metric.name == "taskgate_tasks_finished"
        for sample in metric.samples
        if sample.name == "taskgate_tasks_finished_total"
    )


async def test_status_events_of_ever_new_kinds_add_at_most_a_bounded_number_of_series(
    gateway_settings, worker_connection, unique_name
):
    count = MAX_KIND_LABELS + 20
    events = [
        new_event(unique_name("kind"), uuid.uuid4().hex, "succeeded", 1) for _ in range(count)
    ]
    before = finished_total()
    async with running(gateway_settings), status_channel(worker_connection) as channel:
        for event in events:
            await publish_status(channel, event)

        async def all_recorded() -> bool:
            return finished_total() >= before + count

        await eventually(all_recorded, timeout_s=30, interval_s=0.05)

    kinds = finished_kinds()
    assert len(kinds) <= MAX_KIND_LABELS + 1
    assert OTHER_KIND in kinds
