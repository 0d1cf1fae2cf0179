"""Broker names used by RPC, in one place."""

from __future__ import annotations

from typing import Any, Literal

# What the method queues and rpc.dead are: "classic" (on the node the server is connected
# to; fastest, and a call with no server left fails at once) or "quorum" (a replica on
# each node of a cluster, so a server reconnecting to another node finds its queues there).
QueueType = Literal["classic", "quorum"]
# A quorum method queue cannot auto-delete: it goes once no server has consumed it (nor any
# caller declared it) for this long. Until then a call with no server waits for its timeout.
METHOD_QUEUE_EXPIRES_MS = 60_000

DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"
DEAD_EXCHANGE = "rpc.dead"
DEAD_QUEUE = "rpc.dead"
# Headers of a dead letter (any, not only RPC's): why, where from, and the traceback.
REASON_HEADER = "x-taskgate-reason"
QUEUE_HEADER = "x-taskgate-queue"
TRACEBACK_HEADER = "x-taskgate-traceback"
# Who sent the message that was dead-lettered (its user_id; "" if it had none): the copy
# itself carries the user who dead-lettered it.
SENDER_HEADER = "x-taskgate-sender"
# When it was dead-lettered, Unix milliseconds (an AMQP float is 32 bits): an operator's
# first question.
DIED_AT_HEADER = "x-taskgate-died-at-ms"


def method_queue(method: str) -> str:
    """Name of the queue that serves ``method`` (also its routing key on the default exchange)."""
    return f"rpc.{method}"


def queue_options(queue_type: QueueType, *, method: bool) -> dict[str, Any]:
    """``queue_declare`` keywords for a method queue (``method``) or rpc.dead, by queue type.

    Both are durable: RabbitMQ 4 refuses transient queues that are not exclusive.
    """
    if queue_type == "quorum":
        arguments: dict[str, Any] = {"x-queue-type": "quorum"}
        if method:
            arguments["x-expires"] = METHOD_QUEUE_EXPIRES_MS
        return {"durable": True, "arguments": arguments}
    # Auto-delete: with no server left the queue goes, so a mandatory request is
    # returned at once instead of waiting for its timeout.
    return {"durable": True, "auto_delete": method}
