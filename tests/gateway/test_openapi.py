"""The OpenAPI document: every route declared, the committed file current, served as is."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.app import create_app
from gateway.openapi import DOCUMENT_PATH, document, main, operations
from gateway.settings import GatewaySettings


def test_every_route_of_the_app_is_declared(gateway_settings: GatewaySettings) -> None:
    found = operations(create_app(gateway_settings).routes)
    assert [f"{method} {path}" for method, path, op in found if op is None] == []
    assert len(found) > 20


def test_a_route_without_a_declaration_fails_the_document() -> None:
    async def undeclared(request: Request) -> Response:
        return Response()

    with pytest.raises(LookupError, match="POST /new"):
        document([Route("/new", undeclared, methods=["POST"])])


def test_the_committed_document_is_current() -> None:
    assert main(["--check"]) == 0, "run: python -m gateway.openapi"


async def test_the_gateway_serves_the_document_without_credentials(
    gateway_app: Callable[..., Any], gateway_settings: GatewaySettings
) -> None:
    async with gateway_app(gateway_settings, user=None) as client:
        response = await client.get("/openapi.json")

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == json.loads(DOCUMENT_PATH.read_text())
    assert gateway_settings.secret_key not in response.text
    assert str(gateway_settings.metrics_token) not in response.text


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PUT", "/session", "DELETE, GET, HEAD, POST"),
        ("PATCH", "/tasks/t1", "DELETE, GET, HEAD"),
        ("OPTIONS", "/tasks/t1/retry", "POST"),
    ],
)
async def test_a_405_allows_every_method_the_path_serves(
    gateway_app: Callable[..., Any],
    gateway_settings: GatewaySettings,
    method: str,
    path: str,
    allowed: str,
) -> None:
    # Starlette named only the first matching route's methods: PUT /session said "POST".
    async with gateway_app(gateway_settings) as client:
        response = await client.request(method, path)

    assert response.status_code == 405
    assert response.headers["allow"] == allowed
    assert response.json()["error"]["code"] == "method_not_allowed"
