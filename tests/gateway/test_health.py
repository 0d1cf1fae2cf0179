"""Health and readiness of the web process."""

from __future__ import annotations

from dataclasses import replace

from gateway.settings import GatewaySettings
from infra.ports import free_port

from .conftest import wait_ready


def unreachable_broker(settings: GatewaySettings) -> GatewaySettings:
    return replace(
        settings,
        amqp_url=f"amqp://guest:guest@127.0.0.1:{free_port()}/",
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
    assert response.json() == {"status": "unavailable", "broker": "disconnected", "store": "ok"}


async def test_readyz_turns_ready_once_broker_is_connected(gateway_app, gateway_settings):
    async with gateway_app(gateway_settings) as client:
        await wait_ready(client)
        assert (await client.get("/readyz")).json() == {
            "status": "ready",
            "broker": "connected",
            "store": "ok",
        }
