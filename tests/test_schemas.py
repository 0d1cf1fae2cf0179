"""The JSON Schemas in schemas/ describe the messages the code sends today."""

from __future__ import annotations

import json

import msgspec

from workers.messages import new_event
from workers.schemas import SCHEMA_DIR, schemas, stale


def test_the_schema_files_are_up_to_date():
    assert stale() == [], "run: python -m workers.schemas"


def test_every_schema_file_is_generated():
    assert sorted(p.name for p in SCHEMA_DIR.glob("*.json")) == sorted(schemas())


def test_a_status_event_has_what_its_schema_requires():
    schema = json.loads((SCHEMA_DIR / "status-event.json").read_text())
    required = schema["$defs"]["StatusEvent"]["required"]
    event = msgspec.json.decode(msgspec.json.encode(new_event("k", "t1", "queued", 1)))

    assert set(required) <= set(event)
