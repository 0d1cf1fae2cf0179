"""Notifications: one POST reaches every open stream, on every gateway process."""

from __future__ import annotations

import asyncio
import json

import httpx
import httpx_sse

from .conftest import wait_ready


async def listen(client: httpx.AsyncClient, subscribed: asyncio.Event) -> dict:
    """The first notification on a new stream; ``subscribed`` is set once the stream is open."""
    async with httpx_sse.aconnect_sse(client, "GET", "/notifications/stream") as source:
        async for event in source.aiter_sse():
            if event.event == "notification":
                return json.loads(event.data)
            subscribed.set()  # the retry hint comes once the stream is on the hub
    raise AssertionError("the stream ended without a notification")


async def test_a_notification_reaches_streams_on_every_gateway(gateway_process):
    gateways = [gateway_process(), gateway_process()]
    for gateway in gateways:
        await gateway.wait_ready()
    clients = [g.client() for g in gateways]
    try:
        subscribed = [asyncio.Event() for _ in clients]
        listeners = [
            asyncio.create_task(listen(client, ready))
            for client, ready in zip(clients, subscribed, strict=True)
        ]
        for ready in subscribed:
            await ready.wait()
        sent = await clients[0].post(
            "/notifications", json={"title": "Deploy", "body": "v2 is out", "level": "success"}
        )
        received = await asyncio.wait_for(asyncio.gather(*listeners), timeout=30)
    finally:
        for client in clients:
            await client.aclose()

    assert sent.status_code == 202
    for notification in received:
        assert notification == {
            "title": "Deploy",
            "body": "v2 is out",
            "level": "success",
            "notification_id": sent.json()["notification_id"],
        }


async def test_an_invalid_notification_is_422(gateway_app, gateway_settings):
    async with gateway_app(gateway_settings) as client:
        await wait_ready(client)
        response = await client.post("/notifications", json={"title": "", "level": "loud"})

    assert response.status_code == 422
    assert response.json()["error"]["path"] in {"$.title", "$.level"}
