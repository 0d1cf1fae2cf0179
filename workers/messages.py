"""Wire messages of the task runtime (msgspec Structs, JSON).

A task message body is a :class:`TaskMessage`; its attempt number travels in
the ``x-taskgate-attempt`` header so a retry copy keeps the body byte for byte.
Status events are :class:`StatusEvent` on the ``status`` exchange.
"""

from __future__ import annotations

import math
import time
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar

import msgspec

from rpc.publish import publish_confirmed
from rpc.wire import Channel, Properties, RobustChannel

from .errors import UnknownKind
from .topology import (
    ATTEMPT_HEADER,
    CONTENT_TYPE,
    TASK_MESSAGE_TYPE,
    TASKS_EXCHANGE,
    Priority,
    task_routing_key,
)

# Task ids name directories under STORAGE_DIR, so they must be plain names.
TASK_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
TaskId = Annotated[str, msgspec.Meta(pattern=TASK_ID_PATTERN)]

# stuck: the worker holding the task stopped renewing its lease; the task is back in its queue.
State = Literal[
    "scheduled",
    "queued",
    "running",
    "progress",
    "succeeded",
    "failed",
    "retrying",
    "dead",
    "cancelled",
    "stuck",
]
TERMINAL_STATES: frozenset[str] = frozenset({"succeeded", "failed", "dead", "cancelled"})


class TaskMessage(msgspec.Struct, frozen=True):
    """A unit of work; ``payload`` stays raw until the handler's type decodes it.

    A missing payload is JSON ``null`` to the handler.
    """

    task_id: TaskId
    kind: str
    # A factory, not a plain default: JSON Schema generation cannot encode a Raw default.
    payload: msgspec.Raw = msgspec.field(default_factory=lambda: msgspec.Raw(b"null"))
    submitted_at: float = 0.0  # Unix time, seconds


# Bounds a status event is checked against before anyone stores it (decode_status_event):
# each is far beyond what a real event carries, and each keeps a poison event from
# failing later, deep in a store (SQLite's INTEGER is 64 bits; deep JSON recurses).
MAX_STATUS_EVENT_BYTES = 256 * 1024
MAX_RESULT_DEPTH = 64
MAX_ATTEMPT = 1_000_000
_Text = Annotated[str, msgspec.Meta(max_length=200)]
# Unix time within years 1970..5138: finite, and a REAL in every store.
_Timestamp = Annotated[float, msgspec.Meta(ge=0, le=1e11)]


class StatusEvent(msgspec.Struct, frozen=True, omit_defaults=True):
    """One step in a task's life; ``event_id`` is unique, so consumers can deduplicate.

    ``timestamp`` is Unix time in seconds. ``percent`` and ``message`` come with
    ``progress``; ``result`` with ``succeeded``; ``error`` with ``failed``,
    ``retrying``, ``dead``, ``cancelled`` (who or what cancelled it) and ``stuck`` (whose
    lease ran out); ``retry_in_ms`` with ``retrying``; ``run_at`` (Unix time) and
    ``message`` with ``scheduled``: a delayed task, published to its queue then.
    ``worker`` names the worker process that published the event (``claims.new_holder``);
    None for events from anyone else (the gateway, a submitter, a replay).
    Field bounds are checked when decoding; ``result``'s nesting by
    :func:`decode_status_event`.
    """

    event_id: _Text
    task_id: TaskId
    kind: _Text
    state: State
    attempt: Annotated[int, msgspec.Meta(ge=0, le=MAX_ATTEMPT)]
    timestamp: _Timestamp
    percent: Annotated[float, msgspec.Meta(ge=0, le=100)] | None = None
    message: str | None = None
    result: Any = None
    error: str | None = None
    retry_in_ms: Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)] | None = None
    run_at: _Timestamp | None = None
    worker: _Text | None = None

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES


class Undecodable(ValueError):
    """A message body that cannot be decoded, and why (the reason its dead letter carries)."""


class InvalidStatusEvent(Undecodable):
    """A status event that cannot be used, and why (the reason its dead letter carries)."""


T = TypeVar("T")


def decode_message(decoder: msgspec.json.Decoder[T], body: bytes, what: str) -> T:
    """``body`` decoded by ``decoder``, or Undecodable whose message starts with ``what``.

    The one decode path of every message off the broker: msgspec raises RecursionError,
    not DecodeError, for JSON nested deeper than the interpreter's stack allows, and a
    consumer that let it through would requeue the message until the delivery limit.
    """
    try:
        return decoder.decode(body)
    except msgspec.DecodeError as exc:  # ValidationError included
        raise Undecodable(f"{what}: {exc}") from None
    except RecursionError:
        raise Undecodable(f"{what}: nested deeper than JSON decoding allows") from None


def decode_status_event(body: bytes) -> StatusEvent:
    """``body`` as a StatusEvent within every bound, or InvalidStatusEvent saying why.

    Recording (or anything else) may then rely on it: integers fit 64 bits, text and
    the whole body are bounded, and ``result`` is nested at most MAX_RESULT_DEPTH deep.
    """
    if len(body) > MAX_STATUS_EVENT_BYTES:
        raise InvalidStatusEvent(
            f"status event too large: {len(body)} bytes (at most {MAX_STATUS_EVENT_BYTES})"
        )
    try:
        event = decode_message(event_decoder, body, "undecodable status event")
    except Undecodable as exc:
        raise InvalidStatusEvent(str(exc)) from None
    if event.result is not None and _depth_beyond(event.result, MAX_RESULT_DEPTH):
        raise InvalidStatusEvent(
            f"invalid status event: result nested deeper than {MAX_RESULT_DEPTH}"
        )
    return event


def _depth_beyond(value: Any, limit: int) -> bool:
    """Whether JSON ``value`` nests lists and objects more than ``limit`` deep (no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def decode_task(body: bytes, payload_decoder: msgspec.json.Decoder[T]) -> tuple[TaskMessage, T]:
    """A task message and its payload (by its handler's decoder), or Undecodable saying why."""
    what = "undecodable task message"
    message = decode_message(task_decoder, body, what)
    return message, decode_message(payload_decoder, message.payload, what)


def due_time(delay_s: float | None, run_at: float | None, now: float) -> float | None:
    """When a task submitted at ``now`` with ``delay_s`` or ``run_at`` (Unix time) is due;
    None for at once (neither given, or a time not in the future). ValueError if both
    are given, or either is not a finite number or a delay is negative."""
    if delay_s is not None and run_at is not None:
        raise ValueError("give delay_s or run_at, not both")
    if delay_s is not None:
        if not math.isfinite(delay_s) or delay_s < 0:
            raise ValueError(f"delay_s must be a number of seconds >= 0, not {delay_s!r}")
        run_at = now + delay_s
    if run_at is None:
        return None
    if not math.isfinite(run_at):
        raise ValueError(f"run_at must be a Unix time, not {run_at!r}")
    return run_at if run_at > now else None


def scheduled_event(kind: str, task_id: str, run_at: float) -> StatusEvent:
    """The first event of a task due at ``run_at``: ``scheduled``, saying when."""
    due = datetime.fromtimestamp(run_at, UTC).isoformat(timespec="seconds")
    return new_event(kind, task_id, "scheduled", 1, run_at=run_at, message=f"due at {due}")


def new_task_id() -> str:
    return uuid.uuid4().hex


def new_event(kind: str, task_id: str, state: State, attempt: int, **fields: Any) -> StatusEvent:
    """A StatusEvent with a fresh ``event_id`` and the current time."""
    return StatusEvent(
        event_id=uuid.uuid4().hex,
        task_id=task_id,
        kind=kind,
        state=state,
        attempt=attempt,
        timestamp=time.time(),
        **fields,
    )


def task_properties(message: TaskMessage) -> Properties:
    """The properties a task message is published with: persistent, its id, attempt 1."""
    return Properties(
        content_type=CONTENT_TYPE,
        message_id=message.task_id,
        message_type=TASK_MESSAGE_TYPE,
        timestamp=datetime.now(UTC),
        delivery_mode=2,
        headers={ATTEMPT_HEADER: 1},
    )


async def publish_task(
    channel: Channel | RobustChannel, message: TaskMessage, priority: Priority = "normal"
) -> None:
    """Publish ``message`` persistently to ``tasks`` at ``priority``; return once the broker
    has it.

    The kind's queue must be declared. Raises BrokerUnavailable if the broker is
    down or refuses the message (a full queue nacks), UnknownKind if unroutable.
    """
    routed = await publish_confirmed(
        channel,
        encoder.encode(message),
        exchange=TASKS_EXCHANGE,
        routing_key=task_routing_key(message.kind, priority),
        properties=task_properties(message),
        mandatory=True,
    )
    if not routed:
        raise UnknownKind(
            f"no queue is bound to {TASKS_EXCHANGE!r} for {message.kind!r} at {priority} priority"
        )


encoder = msgspec.json.Encoder()
task_decoder = msgspec.json.Decoder(TaskMessage)
event_decoder = msgspec.json.Decoder(StatusEvent)
