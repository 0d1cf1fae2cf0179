"""The Starlette application: ``uvicorn --factory gateway.app:create_app``."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from .broker import BrokerLink
from .settings import GatewaySettings


async def healthz(request: Request) -> JSONResponse:
    """The process is up."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    """The process can take work: the broker is connected."""
    broker: BrokerLink = request.app.state.broker
    if broker.ready:
        return JSONResponse({"status": "ready", "broker": "connected"})
    return JSONResponse(
        {"status": "unavailable", "broker": "disconnected"},
        status_code=503,
        headers={"Retry-After": "1"},
    )


def create_app(settings: GatewaySettings | None = None) -> Starlette:
    """Build the app; settings come from the environment unless given."""
    settings = settings or GatewaySettings.from_env()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        broker = BrokerLink(settings)
        app.state.broker = broker
        broker.start()
        try:
            yield
        finally:
            await broker.close()

    routes = [Route("/healthz", healthz), Route("/readyz", readyz)]
    return Starlette(routes=routes, lifespan=lifespan)
