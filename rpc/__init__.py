"""AMQP request/reply for taskgate: a client, a server, their codec and errors.

Generic: imports nothing else of taskgate's.
"""

from .client import RpcClient
from .connection import connect_wire
from .errors import (
    BadRequest,
    BrokerRefused,
    BrokerUnavailable,
    RemoteError,
    RpcClosed,
    RpcError,
    RpcNoServer,
    RpcTimeout,
    ServiceError,
    UnknownMethod,
)
from .server import RpcServer
from .settings import RpcSettings
from .wire import WireConnection

__all__ = [
    "BadRequest",
    "BrokerRefused",
    "BrokerUnavailable",
    "RemoteError",
    "RpcClient",
    "RpcClosed",
    "RpcError",
    "RpcNoServer",
    "RpcServer",
    "RpcSettings",
    "RpcTimeout",
    "ServiceError",
    "UnknownMethod",
    "WireConnection",
    "connect_wire",
]
