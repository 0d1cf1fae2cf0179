"""Reading consumed messages, returning them, and describing the failures that dead-letter
them.

Acks need no help: ``message.ack()`` never fails (on a lost channel the broker
redelivers anyway).
"""

from __future__ import annotations

import logging
import traceback
from typing import Any

import msgspec

from rpc.publish import persistent_copy, publish_confirmed
from rpc.wire import Delivery, RobustChannel, WireError

from .messages import TaskId, encoder
from .topology import ATTEMPT_HEADER, retry_tier, task_routing_key

logger = logging.getLogger(__name__)

# Dead-letter headers stay small: the end of the traceback says where it broke.
TRACEBACK_MAX_CHARS = 4000
# Headers the broker adds on dead-lettering; a retry copy starts without them.
_BROKER_HEADERS = ("x-death", "x-first-death-", "x-last-death-", "x-delivery-count")
_task_id_decoder = msgspec.json.Decoder(TaskId)


def attempt_of(headers: dict[str, Any]) -> int:
    """The attempt a task message is (its header; 1 if missing or not a number)."""
    value = headers.get(ATTEMPT_HEADER, 1)
    return value if isinstance(value, int) and value >= 1 else 1


def valid_task_id(value: str | None) -> str | None:
    """``value`` if it is a valid task id, else None."""
    try:
        return _task_id_decoder.decode(encoder.encode(value))
    except msgspec.DecodeError:
        return None


async def publish_retry(
    channel: RobustChannel, message: Delivery, kind: str, delay_ms: int, attempt: int
) -> None:
    """Publish the copy of ``message`` that will be ``attempt``, to the tier of ``delay_ms``."""
    received = message.properties.headers or {}
    headers = {k: v for k, v in received.items() if not k.startswith(_BROKER_HEADERS)}
    headers[ATTEMPT_HEADER] = attempt
    # The tier keeps the routing key: back to the queue of the priority it came from.
    high = task_routing_key(kind, "high")
    await publish_confirmed(
        channel,
        message.body,
        exchange=retry_tier(delay_ms),
        routing_key=high if message.routing_key == high else task_routing_key(kind),
        properties=persistent_copy(message.properties, headers),
    )


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
