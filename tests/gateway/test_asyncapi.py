"""The AsyncAPI document: current, served as is, every reference and RPC pair whole."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import msgspec
import pytest

import gateway.asyncapi as asyncapi
from gateway.asyncapi import ALL_MESSAGES, DOCUMENT, document, main
from gateway.settings import GatewaySettings
from rpc.topology import method_queue
from workers.messages import StatusEvent
from workers.schemas import RELEASED, RPC_METHODS, SCHEMA_DIR, Message, schemas


def test_the_committed_files_are_current() -> None:
    assert main(["--check"]) == 0, "run: python -m gateway.asyncapi"


def test_the_check_names_a_field_a_change_removed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fields = [(f.name, f.type, f.default) for f in msgspec.structs.fields(StatusEvent)]
    without_error = msgspec.defstruct(
        "StatusEvent",
        [f if f[2] is not msgspec.NODEFAULT else f[:2] for f in fields if f[0] != "error"],
    )
    changed = tuple(
        Message(m.name, m.version, without_error) if m.name == "status-event" else m
        for m in ALL_MESSAGES
    )
    monkeypatch.setattr(asyncapi, "ALL_MESSAGES", changed)

    assert main(["--check"]) == 1
    assert "status-event v1: StatusEvent.error: field removed" in capsys.readouterr().err


async def test_the_gateway_serves_the_document_without_credentials(
    gateway_app: Callable[..., Any], gateway_settings: GatewaySettings
) -> None:
    async with gateway_app(gateway_settings, user=None) as client:
        response = await client.get("/asyncapi.json")

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == json.loads((SCHEMA_DIR / DOCUMENT).read_text())
    assert gateway_settings.secret_key not in response.text


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


def test_every_reference_resolves() -> None:
    doc = document()
    found = list(refs(doc))
    for ref in found:
        node: Any = doc
        for part in ref.removeprefix("#/").split("/"):
            assert isinstance(node, dict) and part in node, ref
            node = node[part]
    assert len(found) > 50


def test_every_message_travels_and_every_channel_is_used() -> None:
    doc = document()
    carried = {name for channel in doc["channels"].values() for name in channel["messages"]}
    used = {op["channel"]["$ref"].rsplit("/", 1)[1] for op in doc["operations"].values()}
    used |= {
        op["reply"]["channel"]["$ref"].rsplit("/", 1)[1]
        for op in doc["operations"].values()
        if "reply" in op
    }

    assert {m.name for m in ALL_MESSAGES} <= carried
    assert set(doc["channels"]) == used
    assert {m["x-taskgate-version"] for m in doc["components"]["messages"].values()} == {1}


@pytest.mark.parametrize("method", sorted(RPC_METHODS))
def test_an_rpc_method_is_a_request_reply_pair(method: str) -> None:
    doc = document()
    serve = [
        op
        for op in doc["operations"].values()
        if op["channel"]["$ref"] == f"#/channels/{method_queue(method)}" and "reply" in op
    ]
    messages = doc["components"]["messages"]

    assert sorted(op["action"] for op in serve) == ["receive", "send"]
    assert serve[0]["reply"]["address"] == {"location": "$message.header#/reply_to"}
    assert messages[f"rpc.{method}.request"]["bindings"]["amqp"]["messageType"] == method
    assert "correlationId" in messages[f"rpc.{method}.request"]
    assert "correlationId" in messages[f"rpc.{method}.reply"]


def test_every_file_in_schemas_is_generated_and_every_release_is_of_a_known_message() -> None:
    versions = {m.name: m.version for m in ALL_MESSAGES}
    released = [p.name.rsplit(".v", 1) for p in (SCHEMA_DIR / RELEASED).glob("*.json")]

    assert sorted(p.name for p in SCHEMA_DIR.glob("*.json")) == sorted(
        [*schemas(ALL_MESSAGES), DOCUMENT]
    )
    assert all(
        name in versions and int(version.removesuffix(".json")) <= versions[name]
        for name, version in released
    ), released
