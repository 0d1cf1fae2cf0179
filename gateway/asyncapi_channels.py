"""Where the AMQP messages travel: the AsyncAPI document's channels and operations.

A channel is an exchange (addressed by the routing keys published on it) or a queue,
named as workers.topology, rpc.topology and the shop's contracts name them; an operation
says which process role (workers.roles) sends or receives there. An RPC method is a
request/reply pair: the reply goes to the request's ``reply_to`` with its
``correlation_id``.
"""

from __future__ import annotations

from typing import Any

from rpc.topology import DEAD_QUEUE as RPC_DEAD_QUEUE
from rpc.topology import DIRECT_REPLY_TO, method_queue
from workers.schemas import RPC_METHODS, rpc_reply, rpc_request
from workers.shop.contracts import ORDER_CREATED, ORDERS_EXCHANGE, SERVICES
from workers.topology import (
    STATUS_EXCHANGE,
    STATUS_RECORDED_EXCHANGE,
    TASKS_EXCHANGE,
    dead_queue_arguments,
)

from .notifications import NOTIFICATIONS_EXCHANGE

AMQP = "0.3.0"  # the version of AsyncAPI's AMQP bindings

_PARAMETERS = {
    "kind": {"description": "a task kind (a handler's name)"},
    "task_id": {"description": "a task's id (an order's id for kind 'order')"},
    "state": {"description": "the event's state (StatusEvent.state)"},
    "seq": {"description": "the event's sequence number in its task's history"},
    "delay_ms": {"description": "a retry tier's delay (RETRY_DELAYS_MS)"},
    "shard": {"description": "a journal shard, 0 to STATUS_SHARDS - 1"},
    "service": {"enum": list(SERVICES), "description": "an order service"},
}


def _exchange(name: str, kind: str, address: str | None, description: str) -> dict[str, Any]:
    exchange = {"name": name, "type": kind, "durable": True, "autoDelete": False, "vhost": "/"}
    return {
        "address": address,
        "description": description,
        "bindings": {"amqp": {"is": "routingKey", "exchange": exchange, "bindingVersion": AMQP}},
    }


def _queue(address: str, description: str, **options: Any) -> dict[str, Any]:
    queue = {"name": address, "durable": True, "exclusive": False, "autoDelete": False, **options}
    return {
        "address": address,
        "description": description,
        "bindings": {"amqp": {"is": "queue", "queue": queue, "bindingVersion": AMQP}},
    }


def _dead(address: str, what: str) -> dict[str, Any]:
    channel = _queue(address, f"Dead letters of {what}: each with its reason (headers).")
    channel["x-arguments"] = dead_queue_arguments()
    return channel


def channels() -> dict[str, dict[str, Any]]:
    """Channel id -> channel: the exchanges (addressed by routing key) and the queues."""
    found = {
        "tasks": _exchange(TASKS_EXCHANGE, "direct", "{kind}", "Work of a kind, normal priority."),
        "tasksHigh": _exchange(TASKS_EXCHANGE, "direct", "{kind}.high", "High-priority work."),
        "taskQueue": _queue("tasks.{kind}", "A kind's work queue (quorum, bounded)."),
        "taskQueueHigh": _queue("tasks.{kind}.high", "A kind's high-priority work queue."),
        "taskDead": _dead("tasks.{kind}.dead", "a kind's tasks, both priorities"),
        "retryTier": _exchange(
            "tasks.retry.{delay_ms}",
            "fanout",
            "{kind}",
            "A retry waits here for delay_ms (a TTL queue of the same name), then goes back"
            " to 'tasks' under its routing key.",
        ),
        "status": _exchange(
            STATUS_EXCHANGE, "topic", "{kind}.{task_id}.{state}", "Every task's status events."
        ),
        "statusJournal": _queue(
            "status.journal.{shard}",
            "Events of the tasks hashing to one shard (by correlation_id), kept until recorded;"
            " one active consumer.",
        ),
        "statusDead": _dead("status.dead", "status events that could not be recorded"),
        "statusRecorded": _exchange(
            STATUS_RECORDED_EXCHANGE,
            "fanout",
            "{task_id}.{seq}.{state}",
            "Recorded events, numbered, to every gateway's live feed.",
        ),
        "orders": _exchange(ORDERS_EXCHANGE, "topic", ORDER_CREATED, "Accepted orders."),
        "orderQueue": _queue("orders.{service}", "One order service's queue of order.created."),
        "orderDead": _dead("orders.{service}.dead", "an order service"),
        "notifications": _exchange(
            NOTIFICATIONS_EXCHANGE,
            "fanout",
            None,
            "Notifications and ended sessions, to every gateway's exclusive queue.",
        ),
        "rpcDead": _dead(RPC_DEAD_QUEUE, "RPC requests no server could answer"),
    }
    for method in RPC_METHODS:
        found[method_queue(method)] = _queue(
            method_queue(method),
            f"Requests of {method}, on the default exchange (routing key = queue name).",
        )
        found[f"{method_queue(method)}.reply"] = {
            "address": None,
            "description": f"Replies of {method}, to the request's reply_to: {DIRECT_REPLY_TO}"
            " or the caller's exclusive server-named queue (amq.gen-*).",
        }
    for channel in found.values():
        address = channel["address"] or ""
        params = {name: _PARAMETERS[name] for name in _PARAMETERS if f"{{{name}}}" in address}
        if params:
            channel["parameters"] = params
    return found


# Which channel carries which messages (a dead-letter channel: the same bodies, dead).
CARRIES = {
    "tasks": ["task"],
    "tasksHigh": ["task"],
    "taskQueue": ["task"],
    "taskQueueHigh": ["task"],
    "taskDead": ["task.dead"],
    "retryTier": ["task"],
    "status": ["status-event"],
    "statusJournal": ["status-event"],
    "statusDead": ["status-event.dead"],
    "statusRecorded": ["status-event"],
    "orders": ["order-created"],
    "orderQueue": ["order-created"],
    "orderDead": ["order-created.dead"],
    "notifications": ["notification", "session-ended"],
    "rpcDead": [f"{rpc_request(m)}.dead" for m in RPC_METHODS],
    **{method_queue(m): [rpc_request(m)] for m in RPC_METHODS},
    **{f"{method_queue(m)}.reply": [rpc_reply(m)] for m in RPC_METHODS},
}

# (operation id, role, action, channel, summary).
_OPERATIONS = (
    ("submitTask", "web", "send", "tasks", "Accept a task (through the outbox)."),
    ("submitHighTask", "web", "send", "tasksHigh", "Accept a high-priority task."),
    ("recordStatus", "web", "receive", "statusJournal", "Record status events in order."),
    ("fanOutRecorded", "web", "send", "statusRecorded", "Hand recorded events to live feeds."),
    ("followRecorded", "web", "receive", "statusRecorded", "Feed SSE streams (exclusive queue)."),
    ("publishOrder", "web", "send", "orders", "Publish an accepted order."),
    ("notify", "web", "send", "notifications", "Send a notification or end a session."),
    ("hearNotifications", "web", "receive", "notifications", "Feed notification streams."),
    ("showTaskDead", "web", "receive", "taskDead", "Admin: show, replay, discard."),
    ("showStatusDead", "web", "receive", "statusDead", "Admin: show, discard."),
    ("showOrderDead", "web", "receive", "orderDead", "Admin: show, discard."),
    ("consumeTask", "worker", "receive", "taskQueue", "Run tasks of the kinds it serves."),
    ("consumeHighTask", "worker", "receive", "taskQueueHigh", "Run high-priority work first."),
    ("publishStatus", "worker", "send", "status", "Report a task's progress and outcome."),
    ("retryTask", "worker", "send", "retryTier", "Schedule another attempt."),
    ("buryTask", "worker", "send", "taskDead", "Dead-letter a task, with its reason."),
    ("replayTask", "worker", "send", "tasks", "taskgate dead replay: a dead task again."),
    ("consumeOrder", "worker", "receive", "orderQueue", "Email, inventory, analytics."),
    ("buryRequest", "rpc", "send", "rpcDead", "Dead-letter a request no one can answer."),
)


def ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"#/{kind}/{name}"}


def _on(channel: str) -> dict[str, Any]:
    """An operation's channel and the messages it takes there."""
    return {
        "channel": ref("channels", channel),
        "messages": [ref(f"channels/{channel}/messages", name) for name in CARRIES[channel]],
    }


def operations() -> dict[str, dict[str, Any]]:
    """Operation id -> send or receive, by role; each RPC method a request/reply pair."""
    found: dict[str, dict[str, Any]] = {}
    for op_id, role, action, channel, summary in _OPERATIONS:
        found[op_id] = {
            "action": action,
            **_on(channel),
            "summary": summary,
            "x-taskgate-role": role,
        }
    for method in RPC_METHODS:
        request, reply = method_queue(method), f"{method_queue(method)}.reply"
        pair = {"address": {"location": "$message.header#/reply_to"}, **_on(reply)}
        for role, action, summary in (
            ("web", "send", f"Call {method} (POST /rpc/{method}, the shop)."),
            ("rpc", "receive", f"Serve {method}: reply to reply_to, same correlation_id."),
        ):
            op_id = f"{'call' if action == 'send' else 'serve'}_{method.replace('.', '_')}"
            found[op_id] = {
                "action": action,
                **_on(request),
                "summary": summary,
                "reply": pair,
                "x-taskgate-role": role,
            }
    return found
