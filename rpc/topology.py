"""Broker names used by RPC, in one place."""

from __future__ import annotations

DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"
DEAD_EXCHANGE = "rpc.dead"
DEAD_QUEUE = "rpc.dead"
# Header that carries why a request was dead-lettered.
REASON_HEADER = "x-taskgate-reason"


def method_queue(method: str) -> str:
    """Name of the queue that serves ``method`` (also its routing key on the default exchange)."""
    return f"rpc.{method}"
