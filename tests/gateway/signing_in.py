"""Signing a test client in the way the page does: a token traded for a session cookie."""

from __future__ import annotations

import httpx

from gateway.auth import SESSION_COOKIE
from gateway.settings import GatewaySettings
from gateway.tokens import mint

from .conftest import USER


async def sign_in(
    client: httpx.AsyncClient, settings: GatewaySettings, user: str = USER, *, admin: bool = False
) -> str:
    """``POST /session`` with a fresh token for ``user``; the session id the cookie holds."""
    token = mint(settings.secret_key, user, ttl_s=3600, admin=admin)
    response = await client.post("/session", json={"token": token})
    assert response.status_code == 200, response.text
    return client.cookies[SESSION_COOKIE]


def same_origin(client: httpx.AsyncClient) -> dict[str, str]:
    """The ``Origin`` a browser sends with a request from the gateway's own page."""
    url = client.base_url
    port = f":{url.port}" if url.port else ""
    return {"Origin": f"{url.scheme}://{url.host}{port}"}
