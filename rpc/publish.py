"""Confirmed publishing on wire channels, and persistent copies of a message's properties."""

from __future__ import annotations

from typing import Any

from .errors import BrokerRefused, BrokerUnavailable
from .wire import BrokerError, Channel, Properties, PublishNacked, RobustChannel, Unavailable


async def publish_confirmed(
    channel: Channel | RobustChannel,
    body: bytes,
    *,
    exchange: str,
    routing_key: str,
    properties: Properties,
    mandatory: bool = False,
) -> bool:
    """Publish on a confirming channel; True once the broker has it, False if returned unroutable.

    Only a ``mandatory`` message can come back unroutable (it needs a ``message_id``
    to be matched to its publish); callers that publish one say what False means
    to them. Raises BrokerUnavailable if the channel is down or the broker nacks,
    BrokerRefused if the broker closed the channel over it (a missing exchange: 404).
    """
    try:
        if isinstance(channel, RobustChannel):
            channel = await channel.get_underlay_channel()
        routed = await channel.basic_publish(
            body,
            exchange=exchange,
            routing_key=routing_key,
            properties=properties,
            mandatory=mandatory,
        )
    except PublishNacked as exc:
        # A full queue with overflow=reject-publish, or a broker error.
        raise BrokerUnavailable(
            f"the broker refused a message to {exchange!r} ({routing_key!r})"
        ) from exc
    except Unavailable as exc:
        raise BrokerUnavailable(f"lost the broker while publishing to {exchange!r}: {exc}") from exc
    except BrokerError as exc:
        raise BrokerRefused(exc.code, exc.text) from exc
    if routed is None:
        raise ValueError("publish_confirmed needs a channel in confirm mode")
    return routed


def persistent_copy(properties: Properties, headers: dict[str, Any]) -> Properties:
    """The identity of a message (ids, type, timestamp) with new headers, marked persistent."""
    return Properties(
        content_type=properties.content_type,
        message_id=properties.message_id,
        correlation_id=properties.correlation_id,
        message_type=properties.message_type,
        timestamp=properties.timestamp,
        headers=headers,
        delivery_mode=2,
    )
