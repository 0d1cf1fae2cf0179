"""Notifications: to yourself by default, to others or everyone only as an admin, with the
sender named, rate-limited per user; on every gateway process."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

import httpx
import httpx_sse

from .conftest import bearer, wait_ready


async def listen(client: httpx.AsyncClient, subscribed: asyncio.Event, count: int = 1) -> list:
    """The first ``count`` notifications on a new stream; ``subscribed`` is set once the
    stream is open."""
    received = []
    async with httpx_sse.aconnect_sse(client, "GET", "/notifications/stream") as source:
        async for event in source.aiter_sse():
            if event.event == "notification":
                received.append(json.loads(event.data))
                if len(received) == count:
                    return received
            subscribed.set()  # the retry hint comes once the stream is on the hub
    raise AssertionError("the stream ended early")


async def test_an_admin_broadcast_reaches_streams_on_every_gateway(gateway_process):
    gateways = [gateway_process(), gateway_process()]
    for gateway in gateways:
        await gateway.wait_ready()
    clients = [gateways[0].client(), gateways[1].client(user="bob")]
    admin = bearer(gateways[0].settings, "root", admin=True)
    try:
        subscribed = [asyncio.Event() for _ in clients]
        listeners = [
            asyncio.create_task(listen(client, ready))
            for client, ready in zip(clients, subscribed, strict=True)
        ]
        for ready in subscribed:
            await ready.wait()
        sent = await clients[0].post(
            "/notifications",
            json={"title": "Deploy", "body": "v2 is out", "level": "success", "to": "*"},
            headers=admin,
        )
        received = await asyncio.wait_for(asyncio.gather(*listeners), timeout=30)
    finally:
        for client in clients:
            await client.aclose()

    assert sent.status_code == 202
    for (notification,) in received:
        assert notification == {
            "notification_id": sent.json()["notification_id"],
            "title": "Deploy",
            "body": "v2 is out",
            "level": "success",
            "sender": "root",
            "to": "*",
        }


async def test_a_notification_reaches_only_its_recipient(gateway_process):
    gateway = gateway_process()
    await gateway.wait_ready()
    admin = bearer(gateway.settings, "root", admin=True)
    async with gateway.client() as ada, gateway.client(user="bob") as bob:
        subscribed = [asyncio.Event(), asyncio.Event()]
        heard_by_ada = asyncio.create_task(listen(ada, subscribed[0]))
        heard_by_bob = asyncio.create_task(listen(bob, subscribed[1], count=2))
        for ready in subscribed:
            await ready.wait()
        for_bob = await ada.post(
            "/notifications", json={"title": "to bob", "to": "bob"}, headers=admin
        )
        to_self = await bob.post("/notifications", json={"title": "note to self"})
        # Ada's first notification, if the others passed her by, is this one.
        to_all = await ada.post("/notifications", json={"title": "all", "to": "*"}, headers=admin)
        ada_got, bob_got = await asyncio.wait_for(
            asyncio.gather(heard_by_ada, heard_by_bob), timeout=30
        )

    assert [r.status_code for r in (for_bob, to_self, to_all)] == [202] * 3
    assert [(n["title"], n["sender"], n["to"]) for n in bob_got] == [
        ("to bob", "root", "bob"),
        ("note to self", "bob", "bob"),
    ]
    assert [n["title"] for n in ada_got] == ["all"]


async def test_a_user_who_is_not_an_admin_notifies_only_themselves(gateway_app, gateway_settings):
    async with gateway_app(gateway_settings) as client:
        await wait_ready(client)
        broadcast = await client.post("/notifications", json={"title": "hi all", "to": "*"})
        to_bob = await client.post("/notifications", json={"title": "hi bob", "to": "bob"})
        forged_sender = await client.post(
            "/notifications", json={"title": "from root", "sender": "root"}
        )
        to_self = await client.post("/notifications", json={"title": "hi me", "to": "ada"})
        by_default = await client.post("/notifications", json={"title": "hi me"})
        # A user named "*" is not everyone.
        star = await client.post(
            "/notifications", json={"title": "hi all"}, headers=bearer(gateway_settings, "*")
        )

    assert broadcast.status_code == 403
    assert broadcast.json()["error"] == {
        "code": "forbidden",
        "message": "only an admin may notify other users or everyone",
        "path": "$.to",
    }
    assert to_bob.status_code == 403
    assert star.status_code == 403
    assert forged_sender.status_code == 422
    assert to_self.status_code == 202 and to_self.json()["to"] == "ada"
    assert by_default.status_code == 202 and by_default.json()["to"] == "ada"


async def test_a_burst_of_301_notifications_is_cut_at_the_limit_with_429(
    gateway_app, gateway_settings
):
    # One a minute after the burst: nothing refills while the test runs.
    settings = replace(gateway_settings, notification_burst=10, notifications_per_minute=1)
    async with gateway_app(settings) as client:
        await wait_ready(client)
        answers = [await client.post("/notifications", json={"title": f"#{n}"}) for n in range(301)]
        someone_else = await client.post(
            "/notifications", json={"title": "hi"}, headers=bearer(settings, "bob")
        )

    codes = [response.status_code for response in answers]
    assert codes == [202] * 10 + [429] * 291
    refused = answers[-1]
    assert refused.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert someone_else.status_code == 202


async def test_an_invalid_notification_is_422(gateway_app, gateway_settings):
    async with gateway_app(gateway_settings) as client:
        await wait_ready(client)
        response = await client.post("/notifications", json={"title": "", "level": "loud"})

    assert response.status_code == 422
    assert response.json()["error"]["path"] in {"$.title", "$.level"}
