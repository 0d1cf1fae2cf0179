"""The OpenAPI document of the HTTP API, generated from declarations next to the handlers.

Declaring a route: decorate its handler with ``@documented(...)``, naming as types what it
takes and answers (the msgspec Structs it decodes and encodes)::

    @documented(
        "Cancel a task",
        responses={200: TaskView, 202: CancelRequested},
        errors=(404, 409),
    )
    async def cancel_task(request: Request) -> Response: ...

``responses`` maps each success status to its JSON body's type (anything
``msgspec.json.schema`` takes; a tuple of types for "one of these"), to ``Media`` for
another content type, or to None for no body. ``errors`` lists the statuses answered with
the JSON error body (``errors.ErrorBody``); the ones a route's declaration implies are
added here: 401 for ``auth="user"``, and 403 too for ``auth="admin"`` (both may answer 503
when the store cannot check a session); 403/415 for a change the session cookie signs
(``gateway.csrf``); 400, 413 and 422 for a JSON ``body``. ``query`` maps each query
parameter to its type, ``headers`` each request header the handler reads (credentials
aside); ``path`` a path parameter to its type where it is not any string.
A Mount is declared by decorating its app (``documented(...)(StaticFiles(...))``).

tests/gateway/test_openapi.py fails for a route of the app without a declaration, and
when ``docs/openapi.json`` differs from what the declarations make:
``python -m gateway.openapi`` rewrites it.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route

from workers.schemas import clean_descriptions

from .errors import ErrorBody

Auth = Literal["public", "user", "admin", "metrics"]
ATTRIBUTE = "__openapi__"
DOCUMENT_PATH = Path(__file__).resolve().parent.parent / "docs" / "openapi.json"
REF_TEMPLATE = "#/components/schemas/{name}"
JSON = "application/json"
T = TypeVar("T")


@dataclass(frozen=True)
class Media:
    """A body that is not JSON: its content type, what it is, and its schema if any."""

    media_type: str
    description: str
    schema: Mapping[str, Any] = field(default_factory=dict)


Body = type | tuple[type, ...] | Media | None


@dataclass(frozen=True)
class Operation:
    summary: str
    responses: Mapping[int, Body]
    errors: Collection[int] = ()
    body: Body = None
    auth: Auth = "user"
    query: Mapping[str, Any] = field(default_factory=dict)
    path: Mapping[str, Any] = field(default_factory=dict)
    headers: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""


def documented(
    summary: str,
    *,
    responses: Mapping[int, Body],
    errors: Collection[int] = (),
    body: Body = None,
    auth: Auth = "user",
    query: Mapping[str, Any] | None = None,
    path: Mapping[str, Any] | None = None,
    headers: Mapping[str, Any] | None = None,
    description: str = "",
) -> Callable[[T], T]:
    """Mark a handler (or a mounted app) with what the document says of its route."""
    operation = Operation(
        summary,
        responses,
        errors,
        body,
        auth,
        dict(query or {}),
        dict(path or {}),
        dict(headers or {}),
        description,
    )

    def declare(handler: T) -> T:
        setattr(handler, ATTRIBUTE, operation)
        return handler

    return declare


def declaration(route: BaseRoute) -> Operation | None:
    target = route.endpoint if isinstance(route, Route) else getattr(route, "app", None)
    return getattr(target, ATTRIBUTE, None)


def operations(routes: Collection[BaseRoute]) -> list[tuple[str, str, Operation | None]]:
    """``(method, path, declaration)`` of every operation the routes serve (HEAD aside)."""
    found = []
    for route in routes:
        if isinstance(route, Route):
            for method in sorted((route.methods or {"GET"}) - {"HEAD"}):
                found.append((method, route.path, declaration(route)))
        elif isinstance(route, Mount):
            found.append(("GET", route.path + "/{path}", declaration(route)))
    return found


_SECURITY: dict[Auth, list[dict[str, list[str]]]] = {
    "public": [],
    "user": [{"bearer": []}, {"session": []}],
    "admin": [{"bearer": []}, {"session": []}],
    "metrics": [{"metricsToken": []}],
}
_ERROR_TEXT = {
    400: "Malformed request",
    401: "No valid credentials",
    403: "Not allowed",
    404: "Not found (or not the caller's)",
    409: "Conflicts with the resource's state",
    413: "Body too large",
    415: "Unsupported body type",
    422: "Invalid body or field",
    429: "Too many requests; see Retry-After",
    500: "The broker refused the gateway's request (configuration)",
    502: "The service behind failed",
    503: "Unavailable now; see Retry-After",
    504: "The service behind timed out",
}


def implied_errors(method: str, operation: Operation) -> set[int]:
    statuses = set(operation.errors)
    if operation.auth in ("user", "admin"):
        statuses |= {401, 503}
        if method not in ("GET", "HEAD", "OPTIONS"):
            statuses |= {403}
            if method == "POST":
                statuses |= {415}
    if operation.auth == "admin":
        statuses.add(403)
    if operation.body is not None and not isinstance(operation.body, Media):
        statuses |= {400, 413, 422}
    return statuses


class _Types:
    """Every JSON type the document names; their schemas become components."""

    def __init__(self) -> None:
        self.types: list[Any] = [ErrorBody]

    def ref(self, body: type | tuple[type, ...]) -> int | tuple[int, ...]:
        if isinstance(body, tuple):
            return tuple(self.ref(one) for one in body)  # type: ignore[misc]
        if body not in self.types:
            self.types.append(body)
        return self.types.index(body)


def _content(body: Body, schemas: Sequence[Any], types: _Types) -> dict[str, Any]:
    if body is None:
        return {}
    if isinstance(body, Media):
        return (
            {body.media_type: {"schema": dict(body.schema)}}
            if body.schema
            else {body.media_type: {}}
        )
    index = types.ref(body)
    if isinstance(index, tuple):
        return {JSON: {"schema": {"anyOf": [schemas[i] for i in index]}}}
    return {JSON: {"schema": schemas[index]}}


def _parameters(location: str, params: Mapping[str, Any], required: bool) -> list[dict[str, Any]]:
    return [
        {
            "name": name,
            "in": location,
            "required": required,
            "schema": msgspec.json.schema(kind),
        }
        for name, kind in params.items()
    ]


def document(routes: Collection[BaseRoute]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``routes``; every one must be declared."""
    found = operations(routes)
    missing = [f"{method} {path}" for method, path, operation in found if operation is None]
    if missing:
        raise LookupError(f"routes without @documented: {', '.join(missing)}")
    types = _Types()
    for _, _, operation in found:
        assert operation is not None
        for body in [operation.body, *operation.responses.values()]:
            if body is not None and not isinstance(body, Media):
                types.ref(body)
    schemas, components = msgspec.json.schema_components(types.types, ref_template=REF_TEMPLATE)
    error_schema = schemas[0]
    paths: dict[str, dict[str, Any]] = {}
    for method, path, operation in found:
        assert operation is not None
        path_names = re.findall(r"{(\w+)(?::\w+)?}", path)
        parameters = _parameters(
            "path", {name: operation.path.get(name, str) for name in path_names}, True
        )
        parameters += _parameters("query", operation.query, False)
        parameters += _parameters("header", operation.headers, False)
        responses: dict[str, Any] = {}
        for status, body in sorted(operation.responses.items()):
            description = body.description if isinstance(body, Media) else "OK"
            content = _content(body, schemas, types)
            responses[str(status)] = {"description": description} | (
                {"content": content} if content else {}
            )
        for status in sorted(implied_errors(method, operation)):
            responses[str(status)] = {
                "description": _ERROR_TEXT.get(status, "Error"),
                "content": {JSON: {"schema": error_schema}},
            }
        entry: dict[str, Any] = {
            "operationId": f"{method.lower()}{re.sub(r'[^A-Za-z0-9]+', '_', path)}".rstrip("_"),
            "summary": operation.summary,
            "security": _SECURITY[operation.auth],
            "responses": responses,
        }
        if operation.description:
            entry["description"] = operation.description
        if parameters:
            entry["parameters"] = parameters
        if operation.body is not None:
            entry["requestBody"] = {
                "required": True,
                "content": _content(operation.body, schemas, types),
            }
        paths.setdefault(re.sub(r"{(\w+):\w+}", r"{\1}", path), {})[method.lower()] = entry
    return clean_descriptions(
        {
            "openapi": "3.1.0",
            "info": {
                "title": "taskgate gateway",
                "version": "1",
                "description": "Tasks, uploads, orders, RPC and notifications over HTTP. "
                "Generated from the handlers' declarations (gateway/openapi.py).",
            },
            "paths": paths,
            "components": {
                "schemas": components,
                "securitySchemes": {
                    "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                    "session": {"type": "apiKey", "in": "cookie", "name": "taskgate_session"},
                    "metricsToken": {"type": "http", "scheme": "bearer"},
                },
            },
        }
    )


def render(doc: Mapping[str, Any]) -> str:
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


@documented(
    "This document",
    responses={200: Media(JSON, "The OpenAPI 3.1 document of this API")},
    auth="public",
)
async def openapi_json(request: Request) -> Response:
    """``GET /openapi.json``, rendered once per process (routes do not change once built)."""
    cached = getattr(request.app.state, "openapi", None)
    if cached is None:
        cached = request.app.state.openapi = render(document(request.app.routes)).encode()
    return Response(cached, media_type=JSON)


def _app_routes() -> list[BaseRoute]:
    from .app import create_app
    from .settings import GatewaySettings

    # Routes do not depend on the settings; a throwaway key satisfies the app's check.
    return list(create_app(GatewaySettings(secret_key="x" * 43)).routes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    parser.add_argument("--output", type=Path, default=DOCUMENT_PATH)
    args = parser.parse_args(argv)
    text = render(document(_app_routes()))
    if args.check:
        current = args.output.is_file() and args.output.read_text() == text
        if not current:
            print(f"{args.output} is stale: run python -m gateway.openapi", file=sys.stderr)
        return 0 if current else 1
    args.output.write_text(text)
    return 0


if __name__ == "__main__":
    # The handlers import gateway.openapi, not this __main__ copy: use theirs (its Media).
    from gateway.openapi import main as run

    sys.exit(run())
