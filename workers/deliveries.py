"""Returning consumed messages, and describing the failures that dead-letter them.

Acks need no help: ``message.ack()`` never fails (on a lost channel the broker
redelivers anyway).
"""

from __future__ import annotations

import logging
import traceback
from typing import Any

import msgspec

from rpc.wire import Delivery, WireError

from .messages import TaskId, encoder
from .topology import ATTEMPT_HEADER, Priority, task_routing_key

logger = logging.getLogger(__name__)

# Dead-letter headers stay small: the end of the traceback says where it broke.
TRACEBACK_MAX_CHARS = 4000


def nack_requeue(message: Delivery) -> None:
    try:
        message.channel.basic_nack(message.delivery_tag, requeue=True)
    except WireError as exc:
        logger.warning("could not return a delivery (it will be redelivered): %s", exc)


def describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def traceback_summary(exc: BaseException) -> str:
    text = "".join(traceback.format_exception(exc, limit=-5))
    return text[-TRACEBACK_MAX_CHARS:]


def attempt_of(headers: dict[str, Any]) -> int:
    """The attempt number a task message's headers carry (1 if none or invalid)."""
    value = headers.get(ATTEMPT_HEADER, 1)
    return value if isinstance(value, int) and value >= 1 else 1


def valid_task_id(value: str | None) -> str | None:
    """``value`` if it is a valid task id, else None."""
    try:
        return _task_id_decoder.decode(encoder.encode(value))
    except msgspec.DecodeError:
        return None


_task_id_decoder = msgspec.json.Decoder(TaskId)


def priority_of(kind: str, message: Delivery) -> Priority:
    """The priority a task message came with: its routing key names its queue's level
    (a retry tier keeps the routing key, so a retry keeps its level)."""
    return "high" if message.routing_key == task_routing_key(kind, "high") else "normal"
