"""JSON Schemas of every message on the wire, generated from the msgspec Structs, and
their versions.

Each message has a version (``MESSAGES``). ``schemas/<name>.json`` is the schema the
code has now; ``schemas/released/<name>.v<version>.json`` is the schema that version
was released with, written once and then kept as it is. A change the released schema
does not allow (workers.compat: a removed or retyped field, a new required one, a
narrowed enum or bound) needs the version bumped. ``python -m gateway.asyncapi`` writes
them all, with the AsyncAPI document; tests/test_schemas.py checks them. Services in
other languages read these files, never the Python code. docs/design.md says where a
version shows on the wire.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from rpc import codec

from .compat import breaking
from .messages import StatusEvent, TaskMessage
from .shop.contracts import Cart, OrderCreated, Quote, StockLevels, StockQuery

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"
RELEASED = "released"

# RPC methods served by workers.services: request and result types.
RPC_METHODS: dict[str, tuple[type, type]] = {
    "orders.quote": (Cart, Quote),
    "inventory.check": (StockQuery, StockLevels),
}


@dataclass(frozen=True)
class Message:
    """A message body on the wire: its name (its schema file's), version and type."""

    name: str
    version: int
    body: Any

    @property
    def released(self) -> str:
        """The file, under ``schemas/released/``, of the schema this version was released with."""
        return f"{self.name}.v{self.version}.json"

    def schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = clean_descriptions(msgspec.json.schema(self.body))
        return schema


def _reply(result: type) -> Any:
    """The reply envelope of a method: ``{"status": "ok", "result": ...}`` or an error."""
    ok = msgspec.defstruct(
        f"{result.__name__}Reply", [("result", result)], tag_field="status", tag="ok"
    )
    return ok | codec.Error


def rpc_request(method: str) -> str:
    return f"rpc.{method}.request"


def rpc_reply(method: str) -> str:
    return f"rpc.{method}.reply"


# Bump a version for a change workers.compat calls breaking, and say in docs/ what readers
# of the old one must do.
MESSAGES: tuple[Message, ...] = (
    Message("task", 1, TaskMessage),
    Message("status-event", 1, StatusEvent),
    Message("order-created", 1, OrderCreated),
    *(
        message
        for method, (request, result) in RPC_METHODS.items()
        for message in (
            Message(rpc_request(method), 1, request),
            Message(rpc_reply(method), 1, _reply(result)),
        )
    ),
)


def schemas(messages: Iterable[Message] = MESSAGES) -> dict[str, dict[str, Any]]:
    """File name -> JSON Schema, of what the code sends now."""
    return {f"{message.name}.json": message.schema() for message in messages}


def clean_descriptions(node: Any) -> Any:
    """Dedent every docstring-made ``description``, as only newer msgspec releases do.

    Without it the files would depend on which msgspec installed them.
    """
    if isinstance(node, dict):
        return {
            key: inspect.cleandoc(value)
            if key == "description" and isinstance(value, str)
            else clean_descriptions(value)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [clean_descriptions(item) for item in node]
    return node


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def stale(messages: Iterable[Message] = MESSAGES, directory: Path = SCHEMA_DIR) -> list[str]:
    """Schema files that are missing or differ from the Structs, and released ones missing."""
    messages = tuple(messages)
    found = [
        name
        for name, schema in schemas(messages).items()
        if not (directory / name).is_file() or (directory / name).read_text() != render(schema)
    ]
    released = directory / RELEASED
    found += [f"{RELEASED}/{m.released}" for m in messages if not (released / m.released).is_file()]
    return found


def incompatible(
    messages: Iterable[Message] = MESSAGES, directory: Path = SCHEMA_DIR
) -> dict[str, list[str]]:
    """Message name -> what in its schema now breaks the released schema of its version."""
    found = {}
    for message in messages:
        path = directory / RELEASED / message.released
        if path.is_file():
            problems = breaking(json.loads(path.read_text()), message.schema())
            if problems:
                found[f"{message.name} v{message.version}"] = problems
    return found


def write(messages: Iterable[Message] = MESSAGES, directory: Path = SCHEMA_DIR) -> list[str]:
    """Write every schema file, and a released one for each version that has none yet."""
    (directory / RELEASED).mkdir(parents=True, exist_ok=True)
    written = []
    for message in messages:
        text = render(message.schema())
        (directory / f"{message.name}.json").write_text(text)
        written.append(f"{message.name}.json")
        released = directory / RELEASED / message.released
        if not released.is_file():  # a released version's schema never changes
            released.write_text(text)
            written.append(f"{RELEASED}/{message.released}")
    return written
