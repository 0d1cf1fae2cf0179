"""The publisher of task status events: confirmed one at a time, or queued for the next write."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import msgspec

from rpc.errors import BrokerRefused, BrokerUnavailable
from rpc.publish import publish_confirmed
from rpc.wire import BrokerError, Properties, PublishNacked, RobustChannel, Unavailable

from .messages import StatusEvent, encoder
from .topology import CONTENT_TYPE, STATUS_EXCHANGE, STATUS_MESSAGE_TYPE, status_routing_key


async def publish_status(channel: RobustChannel, event: StatusEvent) -> None:
    """Publish ``event`` persistently to ``status`` and wait for the broker's confirm."""
    await publish_confirmed(
        channel,
        encoder.encode(event),
        exchange=STATUS_EXCHANGE,
        routing_key=status_routing_key(event.kind, event.task_id, event.state),
        properties=_status_properties(event),
    )


def publish_status_soon(channel: RobustChannel, event: StatusEvent) -> asyncio.Future[bool]:
    """Queue ``event`` for the channel's next write; pass the result to :func:`confirmed`.

    Raises BrokerUnavailable at once if the channel is down.
    """
    raw = channel.raw
    if raw is None or raw.is_closed:
        raise BrokerUnavailable("lost the broker: the status channel is down; reopening")
    future = raw.publish(
        encoder.encode(event),
        exchange=STATUS_EXCHANGE,
        routing_key=status_routing_key(event.kind, event.task_id, event.state),
        properties=_status_properties(event),
    )
    assert future is not None, "status events go out on a confirming channel"
    return future


async def confirmed(future: asyncio.Future[bool]) -> None:
    """Wait for a confirm from :func:`publish_status_soon`; BrokerUnavailable if none comes."""
    try:
        await future
    except PublishNacked as exc:
        raise BrokerUnavailable("the broker refused a status event") from exc
    except Unavailable as exc:
        raise BrokerUnavailable(f"lost the broker while publishing a status event: {exc}") from exc
    except BrokerError as exc:
        raise BrokerRefused(exc.code, exc.text) from exc


def forget(future: asyncio.Future[bool]) -> None:
    """Nobody will wait for this confirm any more: mark its error, if any, as seen."""
    if future.done() and not future.cancelled():
        future.exception()
    else:
        future.cancel()


def signed(event: StatusEvent, worker: str) -> StatusEvent:
    """``event`` naming ``worker`` as its publisher, unless it names one already (an outcome
    another worker recorded keeps its name when this one republishes it)."""
    return event if event.worker is not None else msgspec.structs.replace(event, worker=worker)


def _status_properties(event: StatusEvent) -> Properties:
    # correlation_id carries the task id: the journal shard is chosen by its hash.
    return Properties(
        content_type=CONTENT_TYPE,
        message_id=event.event_id,
        correlation_id=event.task_id,
        message_type=STATUS_MESSAGE_TYPE,
        timestamp=datetime.fromtimestamp(event.timestamp, UTC),
        delivery_mode=2,
    )
