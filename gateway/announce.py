"""Hand an event recorded by the gateway itself to every gateway's live streams.

The recorder announces the events it records from workers; the gateway also records some of
its own (a task accepted, cancelled, retried, found stuck). A stream that follows one task
reads them from the store when it opens; a stream of every task (the admin's) only hears of
them through this announcement.
"""

from __future__ import annotations

import logging

from rpc.errors import BrokerUnavailable
from workers.topology import (
    STATUS_MESSAGE_TYPE,
    STATUS_RECORDED_EXCHANGE,
    declare_recorded,
    recorded_routing_key,
)

from .publisher import Publisher
from .store import RejectedEvent, StoredEvent

logger = logging.getLogger(__name__)


async def announce_recorded(publisher: Publisher, event: StoredEvent) -> None:
    """Publish ``event`` as the recorder publishes its own.

    If the broker is away now, streams read it from the store when they resume.
    """
    try:
        await publisher.publish(
            event.body,
            exchange=STATUS_RECORDED_EXCHANGE,
            routing_key=recorded_routing_key(event.task_id, event.seq, event.state),
            message_id=f"{event.task_id}.{event.seq}",  # one event, one id: copies are alike
            message_type=STATUS_MESSAGE_TYPE,
            declare=declare_recorded,
        )
    except BrokerUnavailable as exc:
        logger.warning(
            "task %s %s; its live streams will see it later: %s", event.task_id, event.state, exc
        )


def to_announce(results: list[StoredEvent | RejectedEvent]) -> list[StoredEvent]:
    """The events ``record_events`` recorded (not the rejected ones): those to announce."""
    return [event for event in results if isinstance(event, StoredEvent)]
