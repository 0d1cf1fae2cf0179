"""A lean AMQP 0-9-1 client for the RPC hot path (request/reply at thousands per second).

It covers what RPC needs: one connection that reconnects, channels that replay
their set-up, publishing (optionally confirmed), consuming, batched acks,
returns and heartbeats. Everything else in taskgate uses aio-pika.
"""

from .channel import Channel, Delivery
from .codec import Properties
from .errors import (
    ChannelClosed,
    ChannelOutOfStep,
    ConnectionLost,
    ConsumerCancelled,
    PublishBlocked,
    PublishNacked,
    WireError,
)
from .robust import RobustChannel, WireConnection

__all__ = [
    "Channel",
    "ChannelClosed",
    "ChannelOutOfStep",
    "ConnectionLost",
    "ConsumerCancelled",
    "Delivery",
    "Properties",
    "PublishBlocked",
    "PublishNacked",
    "RobustChannel",
    "WireConnection",
    "WireError",
]
