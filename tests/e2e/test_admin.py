"""The operator dashboard (/admin), as an on-call admin uses it: real gateway, worker and
broker behind Chromium."""

from __future__ import annotations

from playwright.async_api import Locator, Page, Request, expect

from workers.topology import dead_queue

from .conftest import GatewayProcess, jpeg_bytes, release, screenshot


async def submit(gateway: GatewayProcess) -> str:
    """Upload an image as "ada" through the API; the new task's id."""
    async with gateway.client() as client:
        response = await client.post(
            "/uploads", files={"file": ("photo.jpg", jpeg_bytes(), "image/jpeg")}
        )
    assert response.status_code == 202, response.text
    return str(response.json()["task_id"])


def task_row(page: Page, task_id: str) -> Locator:
    return page.locator(f'[data-testid="task-row"][data-task-id="{task_id}"]')


async def open_dashboard(open_page, gateway: GatewayProcess, **options: object) -> Page:
    """The dashboard as the admin "ada", its stream open."""
    page = await open_page(gateway, admin=True, path="/admin", **options)
    await expect(page.get_by_test_id("live")).to_have_attribute("data-state", "open")
    return page


async def test_a_task_moves_across_states_live_through_a_gateway_restart_with_its_timeline(
    start_gateway, worker_process, open_page, gateway_settings, kind_prefix
):
    worker_process()
    kind = f"{kind_prefix}.gated"
    gateway = await start_gateway(upload_kind=kind)
    page = await open_dashboard(open_page, gateway)

    task_id = await submit(gateway)
    row = task_row(page, task_id)
    await expect(row).to_have_attribute("data-state", "running")  # held at its first gate
    release(gateway_settings, task_id, 1)
    await expect(row).to_contain_text("10 %")
    await expect(page.locator(f'[data-testid="kind-row"][data-kind="{kind}"]')).to_be_visible()

    # The task finishes while no gateway runs; the dashboard reconnects and catches up.
    assert await gateway.terminate() == 0
    await expect(page.get_by_test_id("live")).to_have_text("reconnecting…")
    for step in (2, 3):
        release(gateway_settings, task_id, step)
    await start_gateway(port=gateway.port, upload_kind=kind)
    await expect(page.get_by_test_id("live")).to_have_text("live")
    await expect(row).to_have_attribute("data-state", "succeeded")
    await screenshot(page, "admin-overview")

    await row.get_by_role("button", name=task_id).click()
    events = page.get_by_test_id("timeline-event")
    await expect(events.first).to_have_attribute("data-state", "queued")
    await expect(events.last).to_have_attribute("data-state", "succeeded")
    await expect(events.filter(has_text="step 2")).to_have_count(1)
    await expect(page.get_by_test_id("task-retry")).to_be_hidden()  # it succeeded
    await screenshot(page, "admin-timeline")


async def test_replaying_a_dead_letter_from_the_dashboard_brings_its_task_back(
    start_gateway, worker_process, open_page, gateway_settings, kind_prefix
):
    worker_process()
    kind = f"{kind_prefix}.flaky"  # one attempt, then the dead-letter queue
    gateway = await start_gateway(upload_kind=kind)
    page = await open_dashboard(open_page, gateway, width=1280, height=1400)
    task_id = await submit(gateway)
    await expect(task_row(page, task_id)).to_have_attribute("data-state", "dead")

    queue = page.locator(f'[data-testid="dead-queue"][data-queue="{dead_queue(kind)}"]')
    await expect(queue.get_by_test_id("dead-count")).to_have_text("1")
    await queue.get_by_role("button", name="Show").click()
    message = page.get_by_test_id("dead-message").filter(has_text=task_id)
    await expect(message).to_contain_text("gate-1 is closed")
    await screenshot(page, "admin-dead-letters")

    release(gateway_settings, task_id, 1)  # the cause is fixed: now it can pass
    await message.get_by_role("checkbox").check()
    await page.get_by_test_id("dead-replay").click()
    await expect(page.get_by_test_id("dead-note")).to_have_text("Replayed 1.")
    await expect(task_row(page, task_id)).to_have_attribute("data-state", "succeeded")
    await expect(queue.get_by_test_id("dead-count")).to_have_text("0")


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


async def test_a_task_found_by_its_id_is_cancelled_then_retried_from_its_timeline(
    start_gateway, worker_process, open_page, gateway_settings, kind_prefix
):
    gateway = await start_gateway(upload_kind=f"{kind_prefix}.waiting")
    page = await open_dashboard(open_page, gateway, width=360, height=800)  # a phone
    task_id = await submit(gateway)  # no worker yet: it waits in its queue
    await expect(task_row(page, task_id)).to_have_attribute("data-state", "queued")

    await page.get_by_label("Task id").fill(task_id)
    await page.get_by_role("button", name="Open").click()
    timeline = page.get_by_test_id("timeline")
    await page.get_by_test_id("task-cancel").click()
    await expect(timeline).to_have_attribute("data-state", "cancelled")

    await page.get_by_test_id("task-retry").click()
    await expect(page.get_by_test_id("timeline-note")).to_have_text(f"Retry of {task_id}.")
    retry_id = await page.get_by_test_id("timeline-id").text_content()
    assert retry_id and retry_id != task_id
    worker_process()
    release(gateway_settings, retry_id, 1)
    await expect(timeline).to_have_attribute("data-state", "succeeded")
    await expect(task_row(page, retry_id)).to_have_attribute("data-state", "succeeded")
    # Wide tables scroll inside their cards; the page itself does not scroll sideways.
    overflow = await page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0
    # The address names the task on show: reloaded (or sent to a colleague), it opens again.
    await page.reload()
    await expect(page.get_by_test_id("timeline-id")).to_have_text(retry_id)
