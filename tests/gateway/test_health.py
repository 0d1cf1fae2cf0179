"""Health and readiness of the web process."""

from __future__ import annotations

from gateway.settings import GatewaySettings
from rpc.node import free_port

from ..helpers import eventually


def unreachable_broker() -> GatewaySettings:
    return GatewaySettings(
        amqp_url=f"amqp://guest:guest@127.0.0.1:{free_port()}/", reconnect_interval_s=0.1
    )


async def test_healthz_answers_without_a_broker(gateway_app):
    async with gateway_app(unreachable_broker()) as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}


async def test_readyz_is_503_with_retry_after_while_broker_is_unreachable(gateway_app):
    async with gateway_app(unreachable_broker()) as client:
        response = await client.get("/readyz")

    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json()["broker"] == "disconnected"


async def test_readyz_turns_ready_once_broker_is_connected(gateway_app, amqp_url):
    async with gateway_app(GatewaySettings(amqp_url=amqp_url)) as client:

        async def ready() -> bool:
            return (await client.get("/readyz")).status_code == 200

        await eventually(ready, timeout_s=30, interval_s=0.05)
        assert (await client.get("/readyz")).json() == {"status": "ready", "broker": "connected"}
