"""Wire messages of the task runtime (msgspec Structs, JSON).

A task message body is a :class:`TaskMessage`; its attempt number travels in
the ``x-taskgate-attempt`` header so a retry copy keeps the body byte for byte.
Status events are :class:`StatusEvent` on the ``status`` exchange.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec

from rpc.publish import publish_confirmed
from rpc.wire import Channel, Properties, RobustChannel

from .errors import UnknownKind
from .topology import ATTEMPT_HEADER, CONTENT_TYPE, TASK_MESSAGE_TYPE, TASKS_EXCHANGE

# Task ids name directories under STORAGE_DIR, so they must be plain names.
TASK_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
TaskId = Annotated[str, msgspec.Meta(pattern=TASK_ID_PATTERN)]

State = Literal["queued", "running", "progress", "succeeded", "failed", "retrying", "dead"]
TERMINAL_STATES: frozenset[str] = frozenset({"succeeded", "failed", "dead"})


class TaskMessage(msgspec.Struct, frozen=True):
    """A unit of work; ``payload`` stays raw until the handler's type decodes it.

    A missing payload is JSON ``null`` to the handler.
    """

    task_id: TaskId
    kind: str
    # A factory, not a plain default: JSON Schema generation cannot encode a Raw default.
    payload: msgspec.Raw = msgspec.field(default_factory=lambda: msgspec.Raw(b"null"))
    submitted_at: float = 0.0  # Unix time, seconds


class StatusEvent(msgspec.Struct, frozen=True, omit_defaults=True):
    """One step in a task's life; ``event_id`` is unique, so consumers can deduplicate.

    ``timestamp`` is Unix time in seconds. ``percent`` and ``message`` come with
    ``progress``; ``result`` with ``succeeded``; ``error`` with ``failed``,
    ``retrying`` and ``dead``; ``retry_in_ms`` with ``retrying``.
    """

    event_id: str
    task_id: str
    kind: str
    state: State
    attempt: int
    timestamp: float
    percent: float | None = None
    message: str | None = None
    result: Any = None
    error: str | None = None
    retry_in_ms: int | None = None

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES


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


async def publish_task(channel: Channel | RobustChannel, message: TaskMessage) -> None:
    """Publish ``message`` persistently to ``tasks``; return once the broker has it.

    The kind's queue must be declared. Raises BrokerUnavailable if the broker is
    down or refuses the message (a full queue nacks), UnknownKind if unroutable.
    """
    routed = await publish_confirmed(
        channel,
        encoder.encode(message),
        exchange=TASKS_EXCHANGE,
        routing_key=message.kind,
        properties=task_properties(message),
        mandatory=True,
    )
    if not routed:
        raise UnknownKind(f"no queue is bound to {TASKS_EXCHANGE!r} for {message.kind!r}")


encoder = msgspec.json.Encoder()
task_decoder = msgspec.json.Decoder(TaskMessage)
event_decoder = msgspec.json.Decoder(StatusEvent)
