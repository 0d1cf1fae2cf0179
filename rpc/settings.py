"""RPC settings: the rpc process's, and the RPC client variables other processes share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from infra.settings import ServiceSettings, Var, setting

from .topology import QueueType

ReplyMode = Literal["direct", "queue"]

# Read by every process that makes RPC calls (web, cli).
RPC_TIMEOUT_S = Var(
    "RPC_TIMEOUT_S",
    10.0,
    "How long an RPC call waits for its reply (504 from the gateway after it).",
)
RPC_REPLY_MODE = Var(
    "RPC_REPLY_MODE",
    "queue",
    # "queue" measured ~10 % faster here (bench/rpc.py).
    "How RPC replies come back: `queue` = one exclusive reply queue per client, "
    "`direct` = `amq.rabbitmq.reply-to`.",
)


@dataclass(frozen=True)
class RpcSettings(ServiceSettings):
    """How an RPC server process (``python -m rpc``) consumes and shuts down."""

    read_by = ("rpc",)

    prefetch: int = setting("RPC_PREFETCH", 256, "Unacked requests the broker may push.")
    concurrency: int = setting("RPC_CONCURRENCY", 128, "Requests handled at once.")
    shutdown_grace_s: float = setting(
        "RPC_SHUTDOWN_GRACE_S", 30.0, "On SIGTERM, how long calls in flight may take to finish."
    )
    queue_type: QueueType = setting(
        "RPC_QUEUE_TYPE",
        "classic",
        "The method queues and `rpc.dead`: `classic` (one node; a call with no server left"
        " fails at once) or `quorum` (for a cluster: they survive the loss of a node; a call"
        " with no server waits for its timeout until the queue expires, 60 s). Every rpc"
        " process on a broker must use the same.",
    )
