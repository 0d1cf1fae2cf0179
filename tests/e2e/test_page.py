"""The page, as people use it: real gateway, worker and rpc processes behind Chromium."""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import Page, Request, Response, expect

from .conftest import (
    empty_order_queues,
    jpeg_bytes,
    release,
    screenshot,
)

# Every img in the thumbnails panel has been fetched and decoded.
THUMBNAILS_LOADED = """() => {
    const images = [...document.querySelectorAll("#thumbnails img")];
    return images.length > 0 && images.every((img) => img.complete && img.naturalWidth > 0);
}"""

# Records every value the progress bar takes, so a test can see it move without racing it:
# each change's old value, then (PROGRESS_VALUES) the current one.
WATCH_PROGRESS = """() => {
    window.progressHistory = [];
    const bar = document.getElementById("upload-progress");
    new MutationObserver((changes) => {
        for (const change of changes) window.progressHistory.push(Number(change.oldValue));
    }).observe(bar, { attributes: true, attributeFilter: ["value"], attributeOldValue: true });
}"""
PROGRESS_VALUES = """() => [
    ...window.progressHistory, document.getElementById("upload-progress").value
]"""


def image_file(tmp_path: Path, width: int = 1200, height: int = 800) -> Path:
    path = tmp_path / "photo.jpg"
    path.write_bytes(jpeg_bytes(width, height))
    return path


async def choose_and_upload(page: Page, path: Path) -> str:
    """Pick the file, press Upload; the task id from the gateway's 202."""
    await page.get_by_label("Image (JPEG, PNG, WebP or GIF)").set_input_files(path)
    async with page.expect_response(lambda r: r.url.endswith("/uploads")) as accepted:
        await page.get_by_role("button", name="Upload").click()
    response = await accepted.value
    assert response.status == 202, await response.text()
    return (await response.json())["task_id"]


async def expect_thumbnails(page: Page, sizes: list[str]) -> None:
    figures = page.get_by_test_id("thumbnails").locator("figure")
    await expect(figures).to_have_count(len(sizes))
    assert [await figure.get_attribute("data-size") for figure in await figures.all()] == sizes
    await page.wait_for_function(THUMBNAILS_LOADED)


async def test_an_uploaded_image_shows_its_progress_then_its_thumbnails(
    start_gateway, worker_process, rpc_process, open_page, tmp_path
):
    worker_process()
    gateway = await start_gateway()
    page = await open_page(gateway)
    await page.evaluate(WATCH_PROGRESS)

    await choose_and_upload(page, image_file(tmp_path))

    status = page.get_by_test_id("upload-status")
    await expect(status).to_have_attribute("data-state", "succeeded")
    await expect(page.get_by_test_id("upload-progress")).to_have_attribute("value", "100")
    await expect(page.get_by_test_id("upload-message")).to_have_text("Done.")
    await expect_thumbnails(page, ["64", "256", "800"])
    await screenshot(page, "upload-done")
    # The bar went through the worker's steps on its way to 100.
    values = await page.evaluate(PROGRESS_VALUES)
    assert any(0 < value < 100 for value in values), values
    assert values[-1] == 100
    assert values == sorted(values)


async def test_a_file_that_is_not_an_image_shows_the_gateways_message(
    start_gateway, open_page, tmp_path
):
    gateway = await start_gateway()
    page = await open_page(gateway)
    notes = tmp_path / "notes.jpg"
    notes.write_text("shopping list: milk, eggs")

    await page.get_by_label("Image (JPEG, PNG, WebP or GIF)").set_input_files(notes)
    await page.get_by_role("button", name="Upload").click()

    await expect(page.get_by_test_id("upload-error")).to_contain_text("not an image")
    await expect(page.get_by_test_id("thumbnails").locator("figure")).to_have_count(0)


async def test_an_order_from_the_catalogue_is_quoted_placed_once_and_fulfilled(
    start_gateway, worker_process, rpc_process, open_page, amqp_url
):
    await empty_order_queues(amqp_url)  # so the stock shown afterwards is this order's doing
    worker_process(orders=True)
    gateway = await start_gateway()
    page = await open_page(gateway)
    order_requests: list[Request] = []
    order_responses: list[Response] = []
    page.on("request", lambda r: order_requests.append(r) if r.url.endswith("/orders") else None)
    page.on("response", lambda r: order_responses.append(r) if r.url.endswith("/orders") else None)

    mug = page.get_by_test_id("product-MUG-01")
    await expect(mug).to_contain_text("Enamel mug")
    await expect(mug).to_contain_text("€15.00")  # 12.50 + 20 % tax
    await expect(mug).to_contain_text("500 in stock")
    await expect(page.get_by_test_id("product-STICKER-01")).to_contain_text("Sold out")
    await page.get_by_label("Quantity of Enamel mug").fill("2")
    # 2 x 12.50, 5.00 tax, 4.90 shipping under 50.00.
    await expect(page.get_by_test_id("quote")).to_have_attribute("data-state", "ready")
    await expect(page.get_by_test_id("quote-total")).to_have_text("€34.90")
    await expect(page.get_by_test_id("quote-shipping")).to_have_text("€4.90")
    await page.get_by_label("Email for the confirmation").fill("ada@example.com")
    await screenshot(page, "order-quote")
    await page.get_by_role("button", name="Place order").dblclick()

    status = page.get_by_test_id("order-status")
    await expect(status).to_have_attribute("data-state", "succeeded")
    for service in ("email", "inventory", "analytics"):
        row = page.get_by_test_id(f"service-{service}")
        await expect(row).to_have_attribute("data-state", "done")
        await expect(row).to_contain_text("done")
    await expect(page.get_by_test_id("order-state")).to_contain_text("Succeeded")
    await expect(page.get_by_test_id("service-email")).to_contain_text("ada@example.com")
    await expect(mug).to_contain_text("498 in stock")
    await screenshot(page, "order-done")
    # A double click orders once: one key, one order.
    assert {r.headers.get("idempotency-key") for r in order_requests} != {None}
    assert len({r.headers["idempotency-key"] for r in order_requests}) == 1
    order_ids = {(await r.json())["order_id"] for r in order_responses}
    assert len(order_ids) == 1
    await expect(page.get_by_test_id("order-id")).to_have_text(order_ids.pop())


async def test_the_page_keeps_following_a_task_across_a_gateway_restart(
    start_gateway, worker_process, rpc_process, open_page, gateway_settings, kind_prefix, tmp_path
):
    worker_process()
    kind = f"{kind_prefix}.gated"
    gateway = await start_gateway(upload_kind=kind)
    page = await open_page(gateway)
    message = page.get_by_test_id("upload-message")
    progress = page.get_by_test_id("upload-progress")

    task_id = await choose_and_upload(page, image_file(tmp_path))
    release(gateway_settings, task_id, 1)
    await expect(message).to_contain_text("step 1")
    await expect(progress).to_have_attribute("value", "10")
    await screenshot(page, "upload-progress")

    assert await gateway.terminate() == 0
    await expect(page.get_by_test_id("upload-connection")).to_contain_text("reconnecting")
    await screenshot(page, "upload-reconnecting")
    # The task moves on while no gateway runs; the new one finds it in the journal.
    release(gateway_settings, task_id, 2)
    await start_gateway(port=gateway.port, upload_kind=kind)
    await expect(message).to_contain_text("step 2")
    await expect(page.get_by_test_id("upload-connection")).to_have_text("")
    release(gateway_settings, task_id, 3)

    await expect(page.get_by_test_id("upload-status")).to_have_attribute("data-state", "succeeded")
    await expect_thumbnails(page, ["64", "256", "800"])


async def test_a_notification_sent_from_the_form_appears_on_every_open_page(
    start_gateway, rpc_process, open_page
):
    gateway = await start_gateway()
    sender = await open_page(gateway)
    onlooker = await open_page(gateway, width=390, height=844)
    for page in (sender, onlooker):
        await expect(page.get_by_test_id("notifications-live")).to_have_attribute(
            "data-state", "open"
        )

    await sender.get_by_label("Title").fill("Deploy")
    await sender.get_by_label("Message").fill("v2 is out")
    await sender.get_by_label("Level").select_option("success")
    await sender.get_by_role("button", name="Send").click()
    await expect(sender.get_by_label("Title")).to_have_value("")
    await sender.get_by_label("Title").fill("Disk almost full")
    await sender.get_by_label("Level").select_option("warning")
    await sender.get_by_role("button", name="Send").click()

    for page in (sender, onlooker):
        items = page.get_by_test_id("notification-list").get_by_test_id("notification")
        await expect(items).to_have_count(2)
        # Newest first.
        await expect(items.nth(0)).to_contain_text("Disk almost full")
        await expect(items.nth(0)).to_have_attribute("data-level", "warning")
        await expect(items.nth(1)).to_contain_text("Deploy")
        await expect(items.nth(1)).to_contain_text("v2 is out")
        await expect(items.nth(1)).to_have_attribute("data-level", "success")
    await screenshot(sender, "notifications")


async def test_an_empty_notification_is_refused_by_the_page(start_gateway, open_page):
    gateway = await start_gateway()
    page = await open_page(gateway)

    await page.get_by_role("button", name="Send").click()

    await expect(page.get_by_test_id("notify-error")).to_have_text("A notification needs a title.")


async def test_the_page_fits_a_narrow_screen(start_gateway, rpc_process, open_page):
    gateway = await start_gateway()
    page = await open_page(gateway, width=320, height=700)

    await expect(page.get_by_test_id("product-MUG-01")).to_contain_text("Enamel mug")
    await page.get_by_label("Quantity of Cap").fill("1")
    await expect(page.get_by_test_id("quote")).to_have_attribute("data-state", "ready")
    overflow = await page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0
    await screenshot(page, "narrow")


async def test_signing_in_and_out_through_the_sign_in_box(start_gateway, open_page, mint_token):
    gateway = await start_gateway()
    page = await open_page(gateway, signed_in=False)
    signin = page.get_by_test_id("signin")

    await expect(signin).to_be_visible()
    await expect(page.get_by_test_id("app")).to_be_hidden()
    await page.get_by_label("Access token").fill("not-a-token")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_test_id("signin-error")).not_to_be_empty()
    await screenshot(page, "signin")

    await page.get_by_label("Access token").fill(mint_token("ada"))
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_test_id("session-user")).to_have_text("Signed in as ada")
    await expect(page.get_by_test_id("app")).to_be_visible()
    await expect(signin).to_be_hidden()
    # The cookie carries the session across a reload.
    await page.reload()
    await expect(page.get_by_test_id("session-user")).to_have_text("Signed in as ada")

    await expect(page.get_by_test_id("notifications-live")).to_have_attribute("data-state", "open")
    await page.get_by_label("Title").fill("For ada's eyes")
    await page.get_by_role("button", name="Send").click()
    notifications = page.get_by_test_id("notification-list").get_by_test_id("notification")
    await expect(notifications).to_have_count(1)

    await page.get_by_role("button", name="Sign out").click()
    await expect(signin).to_be_visible()
    await expect(page.get_by_test_id("app")).to_be_hidden()
    # Someone else at the same browser sees nothing of ada's.
    await page.get_by_label("Access token").fill(mint_token("grace"))
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_test_id("session-user")).to_have_text("Signed in as grace")
    await expect(notifications).to_have_count(0)

    await page.get_by_role("button", name="Sign out").click()
    await page.reload()
    await expect(signin).to_be_visible()


async def test_a_session_that_ends_sends_the_page_back_to_the_sign_in_box(
    start_gateway, open_page, rpc_process, tmp_path
):
    # With the rpc process up the catalogue loads once; without it the page keeps retrying,
    # and a retry's 401 could reach the sign-in box before the upload does.
    gateway = await start_gateway()
    page = await open_page(gateway)
    await expect(page.get_by_test_id("session-user")).to_have_text("Signed in as ada")
    await expect(page.get_by_test_id("product-MUG-01")).to_contain_text("in stock")

    await page.context.clear_cookies()  # as if the session had expired
    await page.get_by_label("Image (JPEG, PNG, WebP or GIF)").set_input_files(image_file(tmp_path))
    await page.get_by_role("button", name="Upload").click()

    await expect(page.get_by_test_id("signin")).to_be_visible()
    await expect(page.get_by_test_id("signin-reason")).to_contain_text("session has ended")


async def test_a_session_that_ends_mid_task_signs_in_again_and_the_page_carries_on(
    start_gateway, worker_process, open_page, gateway_settings, kind_prefix, mint_token, tmp_path
):
    worker_process()
    kind = f"{kind_prefix}.gated"
    gateway = await start_gateway(upload_kind=kind)
    page = await open_page(gateway)
    message = page.get_by_test_id("upload-message")
    task_id = await choose_and_upload(page, image_file(tmp_path))
    release(gateway_settings, task_id, 1)
    await expect(message).to_contain_text("step 1")

    # The session is gone, as when it expires: the streams' next reconnect gets a 401.
    await page.context.clear_cookies()
    assert await gateway.terminate() == 0
    await start_gateway(port=gateway.port, upload_kind=kind)
    await expect(page.get_by_test_id("signin")).to_be_visible()
    await expect(page.get_by_test_id("signin-reason")).to_contain_text("session has ended")
    await screenshot(page, "session-ended")
    release(gateway_settings, task_id, 2)

    await page.get_by_label("Access token").fill(mint_token("ada"))
    await page.get_by_role("button", name="Sign in").click()
    await expect(message).to_contain_text("step 2")
    release(gateway_settings, task_id, 3)
    await expect(page.get_by_test_id("upload-status")).to_have_attribute("data-state", "succeeded")
    await expect_thumbnails(page, ["64", "256", "800"])


async def test_a_queued_upload_is_cancelled_from_the_page(start_gateway, open_page, tmp_path):
    gateway = await start_gateway()  # no worker: the task stays queued until cancelled
    page = await open_page(gateway)
    await choose_and_upload(page, image_file(tmp_path, 64, 48))
    cancel = page.get_by_test_id("upload-cancel")
    await expect(cancel).to_be_visible()

    await cancel.click()

    await expect(page.get_by_test_id("upload-status")).to_have_attribute("data-state", "cancelled")
    await expect(page.get_by_test_id("upload-message")).to_have_text("Cancelled.")
    await expect(cancel).to_be_hidden()
