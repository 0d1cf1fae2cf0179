"""Fixtures that run the real app in-process, lifespan included, behind httpx."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from gateway.app import create_app
from gateway.settings import GatewaySettings


@contextlib.asynccontextmanager
async def running_app(settings: GatewaySettings) -> AsyncIterator[httpx.AsyncClient]:
    """Start the app's lifespan and yield an httpx client wired to it."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            yield client


@pytest.fixture
def gateway_app() -> Callable[..., Any]:
    """``async with gateway_app(settings) as client`` runs the real app for a test."""
    return running_app
