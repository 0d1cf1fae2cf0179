"""The operator dashboard (/admin), as an on-call admin uses it: real gateway, worker and
broker behind Chromium."""

from __future__ import annotations

from playwright.async_api import Request, expect


async def test_a_non_admin_gets_403_and_sees_no_dashboard(start_gateway, open_page, mint_token):
    gateway = await start_gateway()
    page = await open_page(gateway, path="/admin")  # "ada" without the admin role
    response = await page.reload()
    assert response is not None and response.status == 403
    await expect(page.get_by_test_id("admins-only")).to_be_visible()
    await expect(page.get_by_test_id("app")).to_have_count(0)  # not even the empty shell

    # Signing in through the dashboard's own form as a non-admin: no data is even asked for.
    page = await open_page(gateway, signed_in=False, path="/admin")
    asked: list[Request] = []
    page.on("request", lambda r: asked.append(r) if "/admin/" in r.url else None)
    await page.get_by_label("Access token").fill(mint_token("ada"))
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_test_id("admins-only")).to_be_visible()
    await expect(page.get_by_test_id("app")).to_be_hidden()
    assert asked == []
