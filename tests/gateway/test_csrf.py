"""CSRF: a change authenticated by the session cookie must come from the gateway's own page."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from gateway.auth import SESSION_COOKIE
from gateway.tokens import mint

from .conftest import jpeg_bytes, wait_ready
from .signing_in import same_origin, sign_in

NOTIFICATION = json.dumps({"title": "Hello from the attacker"})


async def test_a_cross_site_form_posting_text_plain_is_refused(gateway_app, gateway_settings):
    async with gateway_app(gateway_settings, user=None) as client:
        await wait_ready(client)
        await sign_in(client, gateway_settings)
        # <form enctype="text/plain" action="http://gateway/notifications"> on evil.example.
        cross_site = await client.post(
            "/notifications",
            content=NOTIFICATION,
            headers={
                "Content-Type": "text/plain",
                "Origin": "https://evil.example",
                "Sec-Fetch-Site": "cross-site",
            },
        )
        # The same body from the page itself, still text/plain.
        plain_text = await client.post(
            "/notifications",
            content=NOTIFICATION,
            headers={"Content-Type": "text/plain", **same_origin(client)},
        )
        as_json = await client.post(
            "/notifications",
            content=NOTIFICATION,
            headers={"Content-Type": "application/json", **same_origin(client)},
        )

    assert cross_site.status_code == 403
    assert cross_site.json()["error"]["code"] == "cross_origin"
    assert plain_text.status_code == 415
    assert as_json.status_code == 202


async def test_a_same_site_page_on_another_port_is_refused(gateway_app, gateway_settings):
    other_port = {"Origin": "http://gateway:8001"}
    async with gateway_app(gateway_settings, user=None) as client:
        await wait_ready(client)
        await sign_in(client, gateway_settings)
        answers = {
            "notification": await client.post(
                "/notifications", json={"title": "hi"}, headers=other_port
            ),
            "order": await client.post(
                "/orders",
                json={"email": "ada@example.com", "lines": [{"sku": "CAP-01", "quantity": 1}]},
                headers=other_port,
            ),
            # A form can send multipart: the origin check stands before the type check.
            "upload": await client.post(
                "/uploads",
                files={"file": ("a.jpg", jpeg_bytes(), "image/jpeg")},
                headers=other_port,
            ),
            "rpc": await client.post("/rpc/orders.quote", json={}, headers=other_port),
            "sign-out": await client.delete("/session", headers=other_port),
        }
        still_signed_in = await client.get("/session")

    for name, response in answers.items():
        assert response.status_code == 403, name
        assert response.json()["error"]["code"] == "cross_origin", name
    assert still_signed_in.status_code == 200


async def test_a_cookie_change_needs_origin_or_fetch_metadata(gateway_app, gateway_settings):
    async with gateway_app(gateway_settings, user=None) as client:
        await wait_ready(client)
        await sign_in(client, gateway_settings)
        bare = await client.post("/notifications", json={"title": "hi"})
        cross_site = await client.post(
            "/notifications", json={"title": "hi"}, headers={"Sec-Fetch-Site": "same-site"}
        )
        fetch_metadata = await client.post(
            "/notifications", json={"title": "hi"}, headers={"Sec-Fetch-Site": "same-origin"}
        )
        null_origin = await client.post(
            "/notifications", json={"title": "hi"}, headers={"Origin": "null"}
        )
        reading = await client.get("/session")

    assert bare.status_code == 403
    assert cross_site.status_code == 403
    assert null_origin.status_code == 403
    assert fetch_metadata.status_code == 202
    assert reading.status_code == 200  # reading needs no origin


async def test_a_configured_front_end_may_change_things_with_the_cookie(
    gateway_app, gateway_settings
):
    settings = replace(gateway_settings, cors_origins=("https://app.example",))
    async with gateway_app(settings, user=None) as client:
        await wait_ready(client)
        await sign_in(client, settings)
        allowed = await client.post(
            "/notifications", json={"title": "hi"}, headers={"Origin": "https://app.example"}
        )

    assert allowed.status_code == 202


async def test_bearer_requests_need_no_origin(gateway_app, gateway_settings):
    async with gateway_app(gateway_settings) as client:
        await wait_ready(client)
        response = await client.post("/notifications", json={"title": "from a script"})

    assert response.status_code == 202


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
async def test_a_cross_site_form_cannot_sign_the_victim_in_as_the_attacker(
    gateway_app, gateway_settings, content_type
):
    attackers_token = mint(gateway_settings.secret_key, "mallory", ttl_s=3600)
    body = {
        "text/plain": json.dumps({"token": attackers_token}),
        "application/x-www-form-urlencoded": f"token={attackers_token}",
        "multipart/form-data": f'--b\r\nContent-Disposition: form-data; name="token"\r\n\r\n'
        f"{attackers_token}\r\n--b--\r\n",
    }[content_type]
    header = content_type + ("; boundary=b" if content_type.startswith("multipart") else "")
    async with gateway_app(gateway_settings, user=None) as client:
        forced = await client.post("/session", content=body, headers={"Content-Type": header})
        cross_origin_json = await client.post(
            "/session", json={"token": attackers_token}, headers={"Origin": "https://evil.example"}
        )

    assert forced.status_code == 415
    assert SESSION_COOKIE not in forced.headers.get("set-cookie", "")
    assert cross_origin_json.status_code == 403
    assert SESSION_COOKIE not in cross_origin_json.headers.get("set-cookie", "")
