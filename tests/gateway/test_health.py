"""Health and readiness of the web process.

Ready means a publish would be confirmed and a write would commit; the store's
side is in test_store_trouble.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
from dataclasses import replace

import httpx
import pytest

from gateway.settings import GatewaySettings

from ..helpers import eventually, unreachable_amqp_url
from .conftest import jpeg_bytes, metrics_auth, upload, wait_ready


def unreachable_broker(settings: GatewaySettings) -> GatewaySettings:
    return replace(
        settings,
        amqp_url=unreachable_amqp_url(),
        reconnect_interval_s=0.1,
    )


async def test_healthz_answers_without_a_broker(gateway_app, gateway_settings):
    async with gateway_app(unreachable_broker(gateway_settings)) as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}


async def test_readyz_is_503_with_retry_after_while_broker_is_unreachable(
    gateway_app, gateway_settings
):
    async with gateway_app(unreachable_broker(gateway_settings)) as client:
        response = await client.get("/readyz")

    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json() == {
        "status": "unavailable",
        "broker": "disconnected",
        "store": "ok",
        "recording": "unknown",
        "errors": {"broker": "not connected to the broker"},
    }


async def test_readyz_turns_ready_once_broker_is_connected(gateway_app, gateway_settings):
    async with gateway_app(gateway_settings) as client:
        await wait_ready(client)
        assert (await client.get("/readyz")).json() == {
            "status": "ready",
            "broker": "connected",
            "store": "ok",
            "recording": "ok",
        }


async def test_readyz_is_503_while_the_broker_is_paused_and_200_once_it_resumes(
    gateway_app, gateway_settings, own_broker
):
    # Connected but frozen: its sockets stay open, nothing is confirmed.
    settings = replace(gateway_settings, amqp_url=own_broker.amqp_url, ready_cache_s=0)
    pid = own_broker.pid
    assert pid is not None
    async with gateway_app(settings) as client:
        await wait_ready(client)
        os.kill(pid, signal.SIGSTOP)
        try:
            paused = await client.get("/readyz")
            # Not ready for work that needs a confirm now, but an upload waits in the outbox.
            delayed = await upload(client, jpeg_bytes())
        finally:
            os.kill(pid, signal.SIGCONT)
        await wait_ready(client)
        accepted = await upload(client, jpeg_bytes())

    assert paused.status_code == 503
    assert paused.headers["retry-after"] == "1"
    assert paused.json()["broker"] == "unresponsive"
    assert paused.json()["store"] == "ok"
    assert "did not confirm" in paused.json()["errors"]["broker"]
    assert delayed.status_code == 202, delayed.text
    assert accepted.status_code == 202, accepted.text


async def test_readyz_says_blocked_while_the_broker_blocks_publishers(
    gateway_app, gateway_settings, own_broker
):
    # A memory alarm: connections stay open and other methods are answered, but the
    # broker blocks a connection at its next publish (here the first probe). From the
    # connection.blocked it then sends, /readyz says "blocked" without probing: before,
    # the next probe waited for a confirm that never came and said "unresponsive".
    settings = replace(gateway_settings, amqp_url=own_broker.amqp_url, ready_cache_s=0)
    answers: list[httpx.Response] = []

    async def not_ready() -> bool:
        answers.append(await client.get("/readyz"))
        return answers[-1].status_code == 503

    async with gateway_app(settings) as client:
        await wait_ready(client)
        await asyncio.to_thread(own_broker.rabbitmqctl, "set_vm_memory_high_watermark", "0")
        try:
            await eventually(not_ready, timeout_s=15, interval_s=0.05)
            again = await client.get("/readyz")
            delayed = await upload(client, jpeg_bytes())
        finally:
            await asyncio.to_thread(own_broker.rabbitmqctl, "set_vm_memory_high_watermark", "0.4")
        await wait_ready(client)
        metrics = (await client.get("/metrics", headers=metrics_auth(settings))).text

    blocked = answers[-1]
    assert blocked.headers["retry-after"] == "1"
    assert blocked.json()["broker"] == again.json()["broker"] == "blocked"
    assert blocked.json()["errors"]["broker"] == "the broker blocks publishers: low on memory"
    assert [a.json()["broker"] for a in answers[:-1]] == ["connected"] * (len(answers) - 1)
    # An upload waits in the outbox until the broker takes publishes again.
    assert delayed.status_code == 202, delayed.text
    blocked_s = next(
        line for line in metrics.splitlines() if line.startswith("taskgate_broker_blocked_seconds")
    )
    assert float(blocked_s.split()[-1]) > 0


def last_write_probe(settings: GatewaySettings) -> float:
    """When /readyz last committed its probe row."""
    with contextlib.closing(sqlite3.connect(settings.database_path)) as db:
        return float(db.execute("SELECT checked_at FROM write_probe").fetchone()[0])


@pytest.mark.parametrize(("cache_s", "checks_again"), [(3600, False), (0, True)])
async def test_readyz_reuses_its_answer_for_ready_cache_s(
    gateway_app, gateway_settings, cache_s, checks_again
):
    # A load balancer polling every instance adds one probe per ready_cache_s, not per poll.
    settings = replace(gateway_settings, ready_cache_s=cache_s)
    async with gateway_app(settings) as client:
        first = await client.get("/readyz")
        checked_at = last_write_probe(settings)
        again = await asyncio.gather(*(client.get("/readyz") for _ in range(5)))

    assert (last_write_probe(settings) != checked_at) is checks_again
    if not checks_again:
        assert all(response.json() == first.json() for response in again)
