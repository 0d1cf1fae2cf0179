"""``GET /admin``: the dashboard's page for admins, nothing for anyone else signed in."""

from __future__ import annotations

from gateway.pages import PAGE_CSP

from ..conftest import bearer


async def test_an_admin_gets_the_dashboard_with_the_strict_csp(gateway_app, gateway_settings):
    async with gateway_app(gateway_settings, user=None) as client:
        response = await client.get("/admin", headers=bearer(gateway_settings, admin=True))

    assert response.status_code == 200
    assert response.headers["content-security-policy"] == PAGE_CSP
    assert '<script type="module" src="/static/admin.js">' in response.text


async def test_a_signed_in_non_admin_gets_403_and_no_dashboard(gateway_app, gateway_settings):
    async with gateway_app(gateway_settings, user=None) as client:
        response = await client.get("/admin", headers=bearer(gateway_settings))

    assert response.status_code == 403
    assert response.headers["content-security-policy"] == PAGE_CSP
    assert "Admins only" in response.text
    assert "admin.js" not in response.text  # nothing that would ask the API for data


async def test_without_credentials_the_page_asks_to_sign_in(gateway_app, gateway_settings):
    async with gateway_app(gateway_settings, user=None) as client:
        response = await client.get("/admin")

    assert response.status_code == 200
    assert 'id="signin-form"' in response.text
