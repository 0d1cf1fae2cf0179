"""Sessions: the cookie is an opaque id whose row sign-out deletes, ending its streams."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3

import httpx
import httpx_sse
import jwt

from gateway.auth import SESSION_COOKIE
from gateway.sessions import session_key
from gateway.tokens import mint

from .conftest import USER, jpeg_bytes, wait_ready
from .signing_in import same_origin, sign_in


async def test_the_cookie_is_an_opaque_id_and_the_store_keeps_only_its_hash(
    gateway_app, gateway_settings
):
    token = mint(gateway_settings.secret_key, USER, ttl_s=3600)
    async with gateway_app(gateway_settings, user=None) as client:
        opened = await client.post("/session", json={"token": token})
        session_id = client.cookies[SESSION_COOKIE]
        signed_in = await client.get("/session")
    with contextlib.closing(sqlite3.connect(gateway_settings.database_path)) as db:
        keys = [key for (key,) in db.execute("SELECT key FROM sessions")]

    assert opened.status_code == 200
    assert session_id != token and "." not in session_id  # not the JWT, nor any JWT
    assert token not in opened.headers["set-cookie"]
    assert signed_in.json() == {
        "user_id": USER,
        "admin": False,
        "expires_at": opened.json()["expires_at"],
    }
    assert keys == [session_key(session_id)]
    assert session_id not in keys


async def test_a_cookie_replayed_after_sign_out_is_refused(gateway_app, gateway_settings):
    async with gateway_app(gateway_settings, user=None) as client:
        await wait_ready(client)
        session_id = await sign_in(client, gateway_settings)
        signed_out = await client.delete("/session", headers=same_origin(client))
        cleared = signed_out.headers["set-cookie"]
        # The attacker kept a copy of the cookie.
        copy = {"Cookie": f"{SESSION_COOKIE}={session_id}"}
        replayed = {
            "session": await client.get("/session", headers=copy),
            "notification": await client.post(
                "/notifications", json={"title": "hi"}, headers={**copy, **same_origin(client)}
            ),
            "stream": await client.get("/notifications/stream", headers=copy),
        }

    assert signed_out.status_code == 204
    assert f"{SESSION_COOKIE}=" in cleared and "Max-Age=0" in cleared
    for name, response in replayed.items():
        assert response.status_code == 401, name
        assert "ended" in response.json()["error"]["message"], name


async def test_signing_in_again_ends_the_previous_session(gateway_app, gateway_settings):
    async with gateway_app(gateway_settings, user=None) as client:
        first = await sign_in(client, gateway_settings)
        await sign_in(client, gateway_settings, "grace")
        now = await client.get("/session")
        old = await client.get("/session", headers={"Cookie": f"{SESSION_COOKIE}={first}"})

    assert now.json()["user_id"] == "grace"
    assert old.status_code == 401


async def hold_stream(client: httpx.AsyncClient, url: str, opened: asyncio.Event) -> list[str]:
    """Read ``url``'s SSE stream until the server ends it; ``opened`` is set at its first frame.

    Returns the names of the events seen."""
    events = []
    async with httpx_sse.aconnect_sse(client, "GET", url) as source:
        source.response.raise_for_status()
        async for event in source.aiter_sse():
            events.append(event.event)
            opened.set()
    return events


async def test_sign_out_ends_the_streams_the_session_opened(gateway_process):
    gateway = gateway_process()
    await gateway.wait_ready()
    async with gateway.client(user=None) as browser, gateway.client() as api:
        session_id = await sign_in(browser, gateway.settings)
        # No worker runs: the task stays queued, its stream stays open.
        task = (
            await browser.post(
                "/uploads",
                files={"file": ("photo.jpg", jpeg_bytes(), "image/jpeg")},
                headers=same_origin(browser),
            )
        ).json()
        opened = [asyncio.Event(), asyncio.Event(), asyncio.Event()]
        streams = [
            asyncio.create_task(hold_stream(browser, task["events_url"], opened[0])),
            asyncio.create_task(hold_stream(browser, "/notifications/stream", opened[1])),
            # A Bearer client's stream is not the session's: it stays.
            asyncio.create_task(hold_stream(api, "/notifications/stream", opened[2])),
        ]
        for event in opened:
            await event.wait()
        signed_out = await browser.delete("/session", headers=same_origin(browser))
        ended = await asyncio.wait_for(asyncio.gather(*streams[:2]), timeout=30)
        reconnect = await browser.get(
            task["events_url"], headers={"Cookie": f"{SESSION_COOKIE}={session_id}"}
        )
        bearer_stream_open = not streams[2].done()
        streams[2].cancel()

    assert signed_out.status_code == 204
    assert "queued" in ended[0]
    assert reconnect.status_code == 401
    assert bearer_stream_open


async def test_sign_out_on_one_gateway_ends_the_session_on_another(gateway_process):
    # Each gateway would trust a session it read for an hour: only the sign-out message
    # on the broker can end it there.
    first = gateway_process(session_cache_s=3600.0)
    second = gateway_process(session_cache_s=3600.0)
    await first.wait_ready()
    await second.wait_ready()
    async with first.client(user=None) as here, second.client(user=None) as there:
        session_id = await sign_in(here, first.settings)
        there.cookies.set(SESSION_COOKIE, session_id)
        assert (await there.get("/session")).status_code == 200  # now in its cache
        opened = asyncio.Event()
        stream = asyncio.create_task(hold_stream(there, "/notifications/stream", opened))
        await opened.wait()
        signed_out = await here.delete("/session", headers=same_origin(here))
        await asyncio.wait_for(stream, timeout=30)
        after = await there.get("/session")

    assert signed_out.status_code == 204
    assert after.status_code == 401


async def test_a_bearer_token_signed_out_is_refused_everywhere_until_it_expires(
    gateway_app, gateway_settings
):
    token = mint(gateway_settings.secret_key, USER, ttl_s=3600)
    other = mint(gateway_settings.secret_key, USER, ttl_s=3600)
    async with gateway_app(gateway_settings, user=None) as client:
        revoked = await client.delete("/session", headers=bearer_of(token))
        answers = {
            "session": await client.get("/session", headers=bearer_of(token)),
            "notification": await client.post(
                "/notifications", json={"title": "hi"}, headers=bearer_of(token)
            ),
            "stream": await client.get("/notifications/stream", headers=bearer_of(token)),
            "sign-in": await client.post("/session", json={"token": token}),
        }
        still_valid = await client.get("/session", headers=bearer_of(other))
    with contextlib.closing(sqlite3.connect(gateway_settings.database_path)) as db:
        stored = db.execute("SELECT token_id, expires_at FROM revoked_tokens").fetchall()

    assert revoked.status_code == 204
    for name, response in answers.items():
        assert response.status_code == 401, name
        assert "revoked" in response.json()["error"]["message"], name
    assert still_valid.status_code == 200  # the user's other tokens stay valid
    assert (
        len(stored) == 1
        and stored[0][1] == jwt.decode(token, options={"verify_signature": False})["exp"]
    )


async def test_revoking_a_token_ends_its_streams_on_every_gateway(gateway_process):
    first = gateway_process(session_cache_s=3600.0)
    second = gateway_process(session_cache_s=3600.0)
    await first.wait_ready()
    await second.wait_ready()
    token = mint(first.settings.secret_key, USER, ttl_s=3600)
    async with first.client(user=None) as here, second.client(user=None) as there:
        there.headers.update(bearer_of(token))
        opened = asyncio.Event()
        stream = asyncio.create_task(hold_stream(there, "/notifications/stream", opened))
        await opened.wait()
        revoked = await here.delete("/session", headers=bearer_of(token))
        await asyncio.wait_for(stream, timeout=30)
        after = await there.get("/session")

    assert revoked.status_code == 204
    assert after.status_code == 401


def bearer_of(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
