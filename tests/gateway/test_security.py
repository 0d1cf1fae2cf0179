"""Who may see what, and what bad input gets."""

from __future__ import annotations

import asyncio
import json
import secrets
from dataclasses import replace

import httpx
import httpx_sse
import pytest

from gateway.tokens import mint

from .conftest import USER, bearer, jpeg_bytes, read_stream, upload, wait_ready
from .tasks_for_gateway import GATE_STEPS

PROTECTED = [
    ("POST", "/uploads"),
    ("GET", "/tasks/abc"),
    ("GET", "/tasks/abc/events"),
    ("GET", "/files/abc/thumb-64.jpg"),
    ("POST", "/orders"),
    ("GET", "/orders/abc"),
    ("POST", "/rpc/orders.quote"),
    ("POST", "/notifications"),
    ("GET", "/notifications/stream"),
    ("GET", "/session"),
]


async def test_every_endpoint_without_credentials_is_401(gateway_app, gateway_settings):
    async with gateway_app(gateway_settings, user=None) as client:
        responses = [await client.request(method, path) for method, path in PROTECTED]

    for (method, path), response in zip(PROTECTED, responses, strict=True):
        assert response.status_code == 401, (method, path)
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["error"]["code"] == "unauthorized"


async def test_expired_forged_and_malformed_tokens_are_401(gateway_app, gateway_settings):
    secret = gateway_settings.secret_key
    tokens = {
        "expired": mint(secret, USER, ttl_s=-60),
        "forged": mint(secrets.token_urlsafe(32), USER, ttl_s=3600),
        "tampered": mint(secret, USER, ttl_s=3600)[:-4] + "AAAA",
        "garbage": "not.a.token",
    }
    async with gateway_app(gateway_settings, user=None) as client:
        answers = {
            name: await client.get("/session", headers={"Authorization": f"Bearer {token}"})
            for name, token in tokens.items()
        }
        basic = await client.get("/session", headers={"Authorization": "Basic YWRhOng="})

    for name, response in {**answers, "basic": basic}.items():
        assert response.status_code == 401, name
    assert "expired" in answers["expired"].json()["error"]["message"]


async def test_other_users_get_404_for_tasks_files_streams_and_orders(
    gateway_process, worker_process, rpc_process
):
    worker_process(orders=True)
    gateway = gateway_process()
    await gateway.wait_ready()
    async with gateway.client() as ada, gateway.client(user="bob") as bob:
        task = (await upload(ada, jpeg_bytes())).json()
        history = await read_stream(ada, task["events_url"])
        result = (await ada.get(task["status_url"])).json()["result"]
        file_url = result["outputs"][0]["url"]
        order = (
            await ada.post(
                "/orders",
                json={"email": "ada@example.com", "lines": [{"sku": "CAP-01", "quantity": 1}]},
            )
        ).json()
        theirs = [
            await bob.get(task["status_url"]),
            await bob.get(task["events_url"]),
            await bob.get(file_url),
            await bob.get(order["status_url"]),
            await bob.get(order["events_url"]),
        ]
        mine = [await ada.get(file_url), await ada.get(order["status_url"])]

    assert history[-1].event == "succeeded"
    assert [response.status_code for response in theirs] == [404] * 5
    assert all(response.json()["error"]["code"] == "not_found" for response in theirs)
    assert [response.status_code for response in mine] == [200, 200]


async def test_a_session_cookie_authenticates_a_browser_and_can_be_closed(
    gateway_app, gateway_settings
):
    token = mint(gateway_settings.secret_key, USER, ttl_s=3600)
    async with gateway_app(gateway_settings, user=None) as client:
        refused = await client.post("/session", json={"token": token + "x"})
        opened = await client.post("/session", json={"token": token})
        cookie = opened.headers["set-cookie"]
        signed_in = await client.get("/session")
        closed = await client.delete("/session", headers={"Origin": "http://gateway"})
        after = await client.get("/session")

    assert refused.status_code == 401
    assert opened.json()["user_id"] == USER
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/" in cookie
    assert token not in opened.text and token not in cookie  # the cookie holds a session id
    assert signed_in.json()["user_id"] == USER
    assert closed.status_code == 204
    assert after.status_code == 401


async def test_a_stream_ends_when_its_token_expires_and_its_reconnect_is_refused(
    gateway_process, worker_process, kind_prefix
):
    worker_process()
    gateway = gateway_process(upload_kind=f"{kind_prefix}.gated")
    await gateway.wait_ready()
    short = bearer(gateway.settings, ttl_s=2)
    async with gateway.client() as client:
        task = (await upload(client, jpeg_bytes())).json()
        # The gate stays closed: nothing but the token's expiry can end this stream.
        stream = await read_stream(client, task["events_url"], headers=short)
        again = await client.get(task["events_url"], headers=short)
        for step in GATE_STEPS:
            (gateway.settings.storage_dir / task["task_id"] / f"gate-{step}").touch()

    assert [event.event for event in stream if event.event != "message"] == ["queued", "running"]
    assert again.status_code == 401


async def test_streams_are_capped_per_user_and_per_process(gateway_process):
    gateway = gateway_process(sse_max_per_user=1, sse_max_streams=2)
    await gateway.wait_ready()
    async with (
        gateway.client() as ada,
        gateway.client(user="bob") as bob,
        gateway.client(user="eve") as eve,
    ):
        opened = asyncio.Event()

        async def hold(client: httpx.AsyncClient, done: asyncio.Event) -> None:
            async with httpx_sse.aconnect_sse(client, "GET", "/notifications/stream") as source:
                async for _ in source.aiter_sse():
                    opened.set()
                    await done.wait()
                    return

        done = asyncio.Event()
        holders = [asyncio.create_task(hold(ada, done))]
        await opened.wait()
        second_for_ada = await ada.get("/notifications/stream")
        opened.clear()
        holders.append(asyncio.create_task(hold(bob, done)))
        await opened.wait()
        third_in_process = await eve.get("/notifications/stream")
        done.set()
        await asyncio.gather(*holders)

    assert second_for_ada.status_code == 429
    assert second_for_ada.headers["retry-after"] == "1"
    assert third_in_process.status_code == 503
    assert third_in_process.json()["error"]["code"] == "too_many_streams"


async def test_client_file_names_and_file_urls_never_reach_outside_the_storage(
    gateway_app, gateway_settings, tmp_path
):
    async with gateway_app(gateway_settings) as client:
        await wait_ready(client)
        accepted = await upload(client, jpeg_bytes(), filename="../../../../tmp/owned.jpg")
        task_id = accepted.json()["task_id"]
        probes = [
            f"/files/{task_id}/..%2F..%2Ftaskgate.db",
            f"/files/{task_id}/.outcome.json",
            "/files/.outcomes.sqlite3",
            f"/files/{task_id}/%2e%2e",
            "/files/..%2F..%2Fetc/passwd",
            f"/files/{task_id}/source.jpg%00.png",
        ]
        answers = [await client.get(path) for path in probes]

    assert accepted.status_code == 202
    stored = sorted(p.name for p in (gateway_settings.storage_dir / task_id).iterdir())
    assert stored == ["source.jpg"]
    assert not (tmp_path.parent / "owned.jpg").exists()
    assert [response.status_code for response in answers] == [404] * len(probes)


@pytest.mark.parametrize("path", ["/orders", "/rpc/orders.quote", "/notifications", "/session"])
async def test_an_oversized_json_body_is_413(gateway_app, gateway_settings, path):
    body = json.dumps({"title": "x" * 100_000}).encode()
    # /session reads a body only from a client that is not signed in yet.
    user = None if path == "/session" else USER
    async with gateway_app(gateway_settings, user=user) as client:
        await wait_ready(client)
        response = await client.post(
            path, content=body, headers={"content-type": "application/json"}
        )

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "body_too_large"


async def test_cors_lets_the_configured_front_end_in_with_credentials(
    gateway_app, gateway_settings
):
    settings = replace(gateway_settings, cors_origins=("https://app.example",))
    preflight_headers = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type, idempotency-key",
    }
    async with gateway_app(settings) as client:
        allowed = await client.options(
            "/orders", headers={"Origin": "https://app.example", **preflight_headers}
        )
        other = await client.options(
            "/orders", headers={"Origin": "https://evil.example", **preflight_headers}
        )

    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    assert allowed.headers["access-control-allow-credentials"] == "true"
    assert "access-control-allow-origin" not in other.headers
