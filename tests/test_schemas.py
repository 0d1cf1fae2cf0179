"""The JSON Schemas in schemas/ describe the messages the code sends today, and no change
breaks the released version of a message without bumping it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import pytest

from workers.compat import breaking
from workers.messages import StatusEvent, new_event
from workers.schemas import (
    MESSAGES,
    RELEASED,
    SCHEMA_DIR,
    Message,
    incompatible,
    schemas,
    stale,
    write,
)
from workers.shop.contracts import OrderCreated, Quote

RUN = "run: python -m gateway.asyncapi"


def test_the_schema_files_are_up_to_date():
    assert stale() == [], RUN


def test_no_message_breaks_the_released_schema_of_its_version():
    assert incompatible() == {}, "bump the message's version in workers.schemas.MESSAGES"


def test_a_status_event_has_what_its_schema_requires():
    schema = json.loads((SCHEMA_DIR / "status-event.json").read_text())
    required = schema["$defs"]["StatusEvent"]["required"]
    event = msgspec.json.decode(msgspec.json.encode(new_event("k", "t1", "queued", 1)))

    assert set(required) <= set(event)


def variant(
    drop: str = "", retype: dict[str, Any] | None = None, add: list[Any] | None = None
) -> Any:
    """A copy of StatusEvent with one field dropped, retyped or added: a change to judge."""
    fields: list[Any] = []
    for field in msgspec.structs.fields(StatusEvent):
        if field.name == drop:
            continue
        kind = (retype or {}).get(field.name, field.type)
        required = field.default is msgspec.NODEFAULT and field.default_factory is msgspec.NODEFAULT
        fields.append((field.name, kind) if required else (field.name, kind, field.default))
    return msgspec.defstruct(
        "StatusEvent", [*fields, *(add or [])], omit_defaults=True, kw_only=True
    )


RELEASED_EVENT = json.loads((SCHEMA_DIR / RELEASED / "status-event.v1.json").read_text())
NARROWED_STATES = Literal["queued", "running", "succeeded", "failed"]


@pytest.mark.parametrize(
    ("changed", "problem"),
    [
        (variant(drop="error"), "StatusEvent.error: field removed"),
        (variant(retype={"attempt": str}), "StatusEvent.attempt: type changed: integer -> string"),
        (variant(add=[("host", str)]), "StatusEvent.host: new required field"),
        (variant(retype={"state": NARROWED_STATES}), "StatusEvent.state: enum narrowed"),
        (
            variant(retype={"attempt": Annotated[int, msgspec.Meta(ge=0, le=10)]}),
            "StatusEvent.attempt: maximum narrowed: 1000000 -> 10",
        ),
        (variant(retype={"message": str}), "StatusEvent.message: type changed: null no longer"),
    ],
)
def test_a_breaking_change_fails_the_check_naming_the_field(changed, problem):
    problems = breaking(RELEASED_EVENT, Message("status-event", 1, changed).schema())

    assert any(p.startswith(problem) for p in problems), problems


def test_a_new_optional_field_or_a_looser_bound_is_compatible():
    looser = variant(
        retype={"attempt": Annotated[int, msgspec.Meta(ge=0)]},
        add=[("host", str | None, None)],
    )

    assert breaking(RELEASED_EVENT, Message("status-event", 1, looser).schema()) == []


def test_the_worker_field_added_after_v1_is_compatible():
    assert "worker" not in RELEASED_EVENT["$defs"]["StatusEvent"]["properties"]
    assert breaking(RELEASED_EVENT, Message("status-event", 1, StatusEvent).schema()) == []


def test_a_breaking_change_passes_once_the_version_is_bumped(tmp_path: Path):
    write(MESSAGES, tmp_path)
    broken = variant(drop="error")
    assert list(incompatible([Message("status-event", 1, broken)], tmp_path)) == ["status-event v1"]

    bumped = [Message("status-event", 2, broken)]
    assert stale(bumped, tmp_path) == ["status-event.json", "released/status-event.v2.json"]
    write(bumped, tmp_path)

    assert stale(bumped, tmp_path) == []
    assert incompatible(bumped, tmp_path) == {}
    # The released v1 stays as it was: a v1 reader's contract.
    v1 = json.loads((tmp_path / RELEASED / "status-event.v1.json").read_text())
    assert "error" in v1["$defs"]["StatusEvent"]["properties"]


def test_every_message_has_a_schema_file_of_its_own():
    assert len(schemas()) == len(MESSAGES)


def test_a_change_inside_a_nested_struct_is_named_by_its_path():
    quote = msgspec.defstruct(
        "Quote",
        [
            (f.name, str if f.name == "total_cents" else f.type)
            for f in msgspec.structs.fields(Quote)
            if f.name != "currency"
        ],
    )
    order = msgspec.defstruct(
        "OrderCreated",
        [
            (f.name, quote if f.name == "quote" else f.type)
            for f in msgspec.structs.fields(OrderCreated)
        ],
    )
    released = json.loads((SCHEMA_DIR / RELEASED / "order-created.v1.json").read_text())

    assert breaking(released, Message("order-created", 1, order).schema()) == [
        "OrderCreated.quote.currency: field removed",
        "OrderCreated.quote.total_cents: type changed: integer -> string",
    ]
