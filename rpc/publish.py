"""Confirmed publishing on raw channels, and persistent copies of a message's properties."""

from __future__ import annotations

from typing import Any

import aiormq
from aiormq.abc import DeliveredMessage
from pamqp.commands import Basic

from .connection import CONNECTION_ERRORS
from .errors import BrokerUnavailable


async def publish_confirmed(
    channel: aiormq.abc.AbstractChannel,
    body: bytes,
    *,
    exchange: str,
    routing_key: str,
    properties: aiormq.spec.Basic.Properties,
    mandatory: bool = False,
) -> bool:
    """Publish on a confirming channel; True once the broker has it, False if returned unroutable.

    Only a ``mandatory`` message can come back unroutable. Raises BrokerUnavailable
    if the channel is down or the broker nacks.
    """
    try:
        confirmation: Any = await channel.basic_publish(
            body,
            exchange=exchange,
            routing_key=routing_key,
            properties=properties,
            mandatory=mandatory,
        )
    except CONNECTION_ERRORS as exc:
        raise BrokerUnavailable(f"lost the broker while publishing to {exchange!r}: {exc}") from exc
    except aiormq.exceptions.PublishError:
        return False  # returned unroutable, on a channel that raises for returns
    except aiormq.exceptions.DeliveryError as exc:
        # aiormq raises on a nack (a full queue with overflow=reject-publish, a broker error).
        raise BrokerUnavailable(
            f"the broker refused a message to {exchange!r} ({routing_key!r})"
        ) from exc
    if isinstance(confirmation, Basic.Nack):
        raise BrokerUnavailable(f"the broker refused a message to {exchange!r} ({routing_key!r})")
    return not isinstance(confirmation, DeliveredMessage)


def persistent_copy(
    properties: aiormq.spec.Basic.Properties, headers: dict[str, Any]
) -> aiormq.spec.Basic.Properties:
    """The identity of a message (ids, type, timestamp) with new headers, marked persistent."""
    return aiormq.spec.Basic.Properties(
        content_type=properties.content_type,
        message_id=properties.message_id,
        correlation_id=properties.correlation_id,
        message_type=properties.message_type,
        timestamp=properties.timestamp,
        headers=headers,
        delivery_mode=2,
    )
