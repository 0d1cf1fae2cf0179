"""Dead-lettering: a message that cannot be processed is copied, with why, to where it is kept.

Every consumer of ours (RPC server, task runtime, event consumers, the
gateway's status feed) buries its poison the same way: a persistent copy that
keeps the message's identity and headers, adds the reason, the queue it came
from, who sent it (its ``user_id``: the copy carries the dead-letterer's), when, and
optionally a traceback, and is published with a confirm. The caller
settles the original only once this returns True; on False it is still the
caller's, to return to its queue.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any, Protocol

from .errors import BrokerUnavailable
from .publish import persistent_copy, publish_confirmed
from .topology import (
    DIED_AT_HEADER,
    QUEUE_HEADER,
    REASON_HEADER,
    SENDER_HEADER,
    TRACEBACK_HEADER,
)
from .wire import Channel, Properties, RobustChannel

logger = logging.getLogger(__name__)


class Message(Protocol):
    """What is copied: a wire Delivery, or anything with its body and properties."""

    @property
    def body(self) -> bytes: ...

    @property
    def properties(self) -> Properties: ...


async def dead_letter(
    channel: Channel | RobustChannel,
    message: Message,
    queue: str,
    reason: str,
    *,
    source_queue: str,
    traceback: str | None = None,
    headers: Mapping[str, Any] | None = None,
    exchange: str = "",
) -> bool:
    """Copy ``message`` to ``queue`` (through ``exchange``) with ``reason``; True once confirmed.

    ``headers`` add to the message's own (the attempt number, say). False if the
    broker is down or refused the copy, which is logged; nothing is raised.
    """
    logger.warning(
        "dead-lettering %s from %s: %s", message.properties.message_id, source_queue, reason
    )
    dead_headers = dict(message.properties.headers or {})
    dead_headers.update(headers or {})
    dead_headers[REASON_HEADER] = reason
    dead_headers[QUEUE_HEADER] = source_queue
    dead_headers[SENDER_HEADER] = message.properties.user_id or ""
    dead_headers[DIED_AT_HEADER] = round(time.time() * 1000)
    if traceback is not None:
        dead_headers[TRACEBACK_HEADER] = traceback
    try:
        return await publish_confirmed(
            channel,
            message.body,
            exchange=exchange,
            routing_key=queue,
            properties=persistent_copy(message.properties, dead_headers),
        )
    except BrokerUnavailable as exc:
        logger.warning(
            "could not dead-letter %s to %s: %s", message.properties.message_id, queue, exc
        )
        return False
