"""Broker names used by RPC, in one place."""

from __future__ import annotations

DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"
DEAD_EXCHANGE = "rpc.dead"
DEAD_QUEUE = "rpc.dead"
# Headers of a dead letter (any, not only RPC's): why, where from, and the traceback.
REASON_HEADER = "x-taskgate-reason"
QUEUE_HEADER = "x-taskgate-queue"
TRACEBACK_HEADER = "x-taskgate-traceback"


def method_queue(method: str) -> str:
    """Name of the queue that serves ``method`` (also its routing key on the default exchange)."""
    return f"rpc.{method}"
