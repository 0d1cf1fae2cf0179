"""JSON Schemas of every message on the wire, generated from the msgspec Structs.

``python -m workers.schemas`` writes them to ``schemas/``; ``--check`` exits 1
if a file there is stale (a test runs that check). Services in other languages
read these files, never the Python code.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from pathlib import Path
from typing import Any

import msgspec

from rpc import codec

from .messages import StatusEvent, TaskMessage
from .shop.contracts import Cart, OrderCreated, Quote, StockLevels, StockQuery

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"

# RPC methods served by workers.services: request and result types.
RPC_METHODS: dict[str, tuple[type, type]] = {
    "orders.quote": (Cart, Quote),
    "inventory.check": (StockQuery, StockLevels),
}


def _reply(result: type) -> Any:
    """The reply envelope of a method: ``{"status": "ok", "result": ...}`` or an error."""
    ok = msgspec.defstruct(
        f"{result.__name__}Reply", [("result", result)], tag_field="status", tag="ok"
    )
    return ok | codec.Error


def schemas() -> dict[str, dict[str, Any]]:
    """File name -> JSON Schema."""
    found: dict[str, Any] = {
        "task.json": msgspec.json.schema(TaskMessage),
        "status-event.json": msgspec.json.schema(StatusEvent),
        "order-created.json": msgspec.json.schema(OrderCreated),
    }
    for method, (request, result) in RPC_METHODS.items():
        found[f"rpc.{method}.request.json"] = msgspec.json.schema(request)
        found[f"rpc.{method}.reply.json"] = msgspec.json.schema(_reply(result))
    return {name: clean_descriptions(schema) for name, schema in found.items()}


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


def stale(directory: Path = SCHEMA_DIR) -> list[str]:
    """Names of the schema files that are missing or differ from the Structs."""
    return [
        name
        for name, schema in schemas().items()
        if not (directory / name).is_file() or (directory / name).read_text() != render(schema)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.schemas", description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if a schema file is stale")
    args = parser.parse_args(argv)
    if args.check:
        outdated = stale()
        for name in outdated:
            print(f"stale: schemas/{name} (run python -m workers.schemas)")
        return 1 if outdated else 0
    SCHEMA_DIR.mkdir(exist_ok=True)
    for name, schema in schemas().items():
        (SCHEMA_DIR / name).write_text(render(schema))
        print(f"wrote schemas/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
