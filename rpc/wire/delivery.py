"""A message the broker delivered or returned, and the callbacks that receive one."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from .codec import Properties

if TYPE_CHECKING:
    from .channel import Channel

Consumer = Callable[["Delivery"], Awaitable[None] | None]
ReturnHandler = Callable[["Delivery"], None]


class Delivery:
    """A message the broker delivered (Basic.Deliver) or returned unroutable (Basic.Return)."""

    __slots__ = (
        "body",
        "channel",
        "consumer_tag",
        "delivery_tag",
        "exchange",
        "properties",
        "redelivered",
        "reply_code",
        "reply_text",
        "routing_key",
    )

    def __init__(
        self,
        channel: Channel,
        exchange: str,
        routing_key: str,
        *,
        consumer_tag: str = "",
        delivery_tag: int = 0,
        redelivered: bool = False,
        reply_code: int = 0,
        reply_text: str = "",
    ) -> None:
        self.channel = channel
        self.consumer_tag = consumer_tag
        self.delivery_tag = delivery_tag
        self.redelivered = redelivered
        self.exchange = exchange
        self.routing_key = routing_key
        self.reply_code = reply_code
        self.reply_text = reply_text
        self.properties = Properties()
        self.body = b""

    def ack(self) -> None:
        """Acknowledge this delivery (batched per write; a no-op once the channel is gone)."""
        self.channel.basic_ack(self.delivery_tag)
