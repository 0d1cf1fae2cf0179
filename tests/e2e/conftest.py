"""Browser tests: Debian's Chromium, driven by Playwright, on the page a real gateway serves.

The gateway, worker and rpc processes are the gateway tests' fixtures (tests/gateway/conftest.py).
Set TASKGATE_SCREENSHOTS=1 to save screenshots of the page to docs/screenshots/.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aio_pika
import pytest
from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    async_playwright,
    expect,
)

from gateway import tokens
from gateway.settings import GatewaySettings
from workers.events import declare_event_queue
from workers.shop.consumers import ORDER_QUEUES
from workers.shop.contracts import ORDER_CREATED, ORDERS_EXCHANGE

from ..gateway.conftest import *  # noqa: F403  (the gateway, worker and rpc process fixtures)
from ..gateway.conftest import GatewayProcess, jpeg_bytes  # noqa: F401  (for the tests)

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
# Playwright's expect() and locator waits; each test stays well under its own limit.
TIMEOUT_MS = 15_000

expect.set_options(timeout=TIMEOUT_MS)


def chromium() -> str:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: scripts/ensure-deb /usr/bin/chromium:chromium")
    return str(CHROMIUM)


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    """One headless Chromium for the session (never a downloaded browser build)."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=chromium(),
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield browser
        await browser.close()


@pytest.fixture
def mint_token(gateway_settings: GatewaySettings) -> Callable[..., str]:
    """Access tokens signed with the SECRET_KEY the test's gateway processes get
    (``admin=True``: an admin's)."""

    def mint(user_id: str, *, admin: bool = False) -> str:
        return tokens.mint(gateway_settings.secret_key, user_id, ttl_s=3600, admin=admin)

    return mint


@pytest.fixture
def start_gateway(
    gateway_process: Callable[..., GatewayProcess],
) -> Callable[..., Awaitable[GatewayProcess]]:
    """``await start_gateway(**overrides)``: a ready gateway process (``port=`` restarts one)."""

    async def start(**overrides: object) -> GatewayProcess:
        gateway = gateway_process(**overrides)
        await gateway.wait_ready()
        return gateway

    return start


class PageErrors:
    """Uncaught exceptions in the page and what the CSP blocked: a test fails on any (other
    console noise, such as a refused request, is fine)."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def __call__(self, error: Exception) -> None:
        self.errors.append(str(error))

    def console(self, message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            self.errors.append(message.text)


@pytest.fixture
async def open_page(
    browser: Browser, mint_token: Callable[..., str]
) -> AsyncIterator[Callable[..., Awaitable[Page]]]:
    """``await open_page(gateway)``: a fresh browser context on the gateway's page (``path``).

    ``signed_in=True`` (the default) first sets the session cookie the way the page's
    sign-in box does, with a token for "ada" (an admin's with ``admin=True``).
    """
    contexts: list[BrowserContext] = []
    page_errors = PageErrors()

    async def open_(
        gateway: GatewayProcess,
        *,
        signed_in: bool = True,
        admin: bool = False,
        path: str = "/",
        width: int = 1280,
        height: int = 900,
    ) -> Page:
        context = await browser.new_context(
            base_url=gateway.url,
            locale="en-US",
            timezone_id="UTC",
            viewport={"width": width, "height": height},
        )
        contexts.append(context)
        context.set_default_timeout(TIMEOUT_MS)
        if signed_in:
            await sign_in(context, mint_token("ada", admin=admin))
        page = await context.new_page()
        page.on("pageerror", page_errors)
        page.on("console", page_errors.console)
        await page.goto(path)
        return page

    yield open_
    for context in contexts:
        await context.close()
    assert page_errors.errors == [], "uncaught errors (or CSP violations) in the page"


async def sign_in(context: BrowserContext, token: str) -> None:
    """POST /session as the page's sign-in box does; the cookie lands in the context."""
    response = await context.request.post("/session", data={"token": token})
    assert response.status == 200, await response.text()


async def screenshot(page: Page, name: str) -> None:
    """Save the page as docs/screenshots/<name>.png when TASKGATE_SCREENSHOTS=1."""
    if os.environ.get("TASKGATE_SCREENSHOTS") != "1":
        return
    SCREENSHOTS.mkdir(exist_ok=True)
    await page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=True, animations="disabled")


def release(settings: GatewaySettings, task_id: str, step: int) -> None:
    """Let the gated task go past ``step`` (see tests/gateway/tasks_for_gateway.py)."""
    (settings.storage_dir / task_id / f"gate-{step}").touch()


async def empty_order_queues(amqp_url: str) -> None:
    """Drop orders other tests left on the shared order queues, before a worker consumes them."""
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        raw = await channel.get_underlay_channel()
        for queue in ORDER_QUEUES:
            await declare_event_queue(
                raw, queue, exchange=ORDERS_EXCHANGE, routing_key=ORDER_CREATED
            )
            await raw.queue_purge(queue)
    finally:
        await connection.close()
