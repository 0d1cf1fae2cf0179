"""Prometheus metrics of the worker process: tasks by kind and outcome, handler time,
domain events consumed."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

STATUS_EVENTS = Counter(
    "taskgate_worker_status_events",
    "Status events published, by task kind and state",
    ["kind", "state"],
)
TASK_SECONDS = Histogram(
    "taskgate_worker_task_seconds",
    "Time in task handlers, by kind",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
EVENTS_CONSUMED = Counter(
    "taskgate_worker_events_consumed",
    "Domain events (order.created …) handled, by queue and outcome (ok, retry, dead)",
    ["queue", "outcome"],
)
MESSAGE_COPIES = Counter(
    "taskgate_worker_message_copies",
    "Copies of messages whose work another consumer held (waited) or had done (ignored:"
    " published; republished: its holder died before publishing), by consumer: the task"
    " kind, or the order queue",
    ["consumer", "action"],
)
