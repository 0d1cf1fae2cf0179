"""A lean AMQP 0-9-1 client for the RPC hot path (request/reply at thousands per second).

It covers what RPC needs: one connection that reconnects, channels that replay
their set-up, publishing (optionally confirmed), consuming, batched acks,
returns and heartbeats. It is taskgate's only AMQP client; its errors are in errors.py.
"""

from .channel import Channel, Delivery
from .codec import Properties
from .errors import (
    BrokerError,
    ChannelClosed,
    ChannelLost,
    ChannelOutOfStep,
    ConnectError,
    ConnectionClosed,
    ConnectionLost,
    ConsumerCancelled,
    PublishBlocked,
    PublishNacked,
    TransportError,
    Unavailable,
    WireError,
)
from .robust import RobustChannel, WireConnection

__all__ = [
    "BrokerError",
    "Channel",
    "ChannelClosed",
    "ChannelLost",
    "ChannelOutOfStep",
    "ConnectError",
    "ConnectionClosed",
    "ConnectionLost",
    "ConsumerCancelled",
    "Delivery",
    "Properties",
    "PublishBlocked",
    "PublishNacked",
    "RobustChannel",
    "TransportError",
    "Unavailable",
    "WireConnection",
    "WireError",
]
