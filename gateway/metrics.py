"""Prometheus metrics of the web process, and ``GET /metrics``.

RPC call counts and latencies come from ``rpc.metrics`` (the gateway's client
side); the SSE connection gauge reads the stream limiter at scrape time.
Label values are bounded: a status event's kind is any publisher's text, and each
value is a series kept for the life of the process (:func:`kind_label`). On the
web port ``/metrics`` answers only ``Authorization: Bearer <METRICS_TOKEN>``
(404 while METRICS_TOKEN is unset); METRICS_PORT serves them without a token.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

from rpc.wire.protocol import blocked_seconds_total

from .errors import HttpError
from .openapi import Media, documented
from .settings import GatewaySettings

if TYPE_CHECKING:
    from .autoscale import KindLoad

# Distinct kinds that get a label value of their own; later kinds are counted as OTHER_KIND.
MAX_KIND_LABELS = 32
OTHER_KIND = "other"
_kinds: set[str] = set()


def kind_label(kind: str) -> str:
    """``kind`` as a label value: the first MAX_KIND_LABELS kinds seen, then OTHER_KIND."""
    if kind in _kinds:
        return kind
    if len(_kinds) < MAX_KIND_LABELS:
        _kinds.add(kind)
        return kind
    return OTHER_KIND


TASKS_ACCEPTED = Counter(
    "taskgate_tasks_accepted", "Tasks and orders accepted (202/201), by kind", ["kind"]
)
TASKS_FINISHED = Counter(
    "taskgate_tasks_finished",
    "Terminal status events seen by this process, by kind and state",
    ["kind", "state"],
)
TASKS_STUCK = Counter(
    "taskgate_tasks_stuck",
    "Tasks this process queued again because their worker stopped renewing its lease, by kind",
    ["kind"],
)
EVENTS_RECORDED = Counter(
    "taskgate_events_recorded", "Status events this process recorded, by state", ["state"]
)
STATUS_EVENTS_DEAD = Counter(
    "taskgate_status_events_dead",
    "Status events this process's recorder moved to status.dead (invalid, rejected, unstorable)",
)
RECORDING_LAG = Gauge(
    "taskgate_recording_lag_seconds",
    "How long the oldest status event this process holds unrecorded has waited",
)
EVENTS_DELIVERED = Counter("taskgate_events_delivered", "Status events written to SSE streams")
SSE_CONNECTIONS = Gauge("taskgate_sse_connections", "Open SSE streams")
UPLOAD_BYTES = Counter("taskgate_upload_bytes", "Bytes of accepted uploads")


# The autoscaling signal (gateway/autoscale.py), per kind a worker registered (at most
# workers.kinds.MAX_KINDS), the same in every web process: take max() across them.
QUEUE_READY = Gauge("taskgate_queue_ready", "Task messages ready in the kind's queue", ["kind"])
QUEUE_CONSUMERS = Gauge("taskgate_queue_consumers", "Consumers of the kind's queue", ["kind"])
QUEUE_UNACKED = Gauge(
    "taskgate_queue_unacked",
    "Tasks delivered to workers and not yet settled (live leases: running or prefetched)",
    ["kind"],
)
QUEUE_OLDEST_AGE = Gauge(
    "taskgate_queue_oldest_ready_age_seconds",
    "Age of the oldest task waiting in the kind's queue that no worker holds (0: none)",
    ["kind"],
)
TASK_ARRIVALS = Gauge(
    "taskgate_task_arrival_rate", "Tasks created per second over AUTOSCALE_WINDOW_S", ["kind"]
)
TASK_COMPLETIONS = Gauge(
    "taskgate_task_completion_rate",
    "Task outcomes recorded per second over AUTOSCALE_WINDOW_S",
    ["kind"],
)
TASK_MEAN_SECONDS = Gauge(
    "taskgate_task_mean_seconds",
    "Mean run time of the tasks completed over AUTOSCALE_WINDOW_S (absent: none)",
    ["kind"],
)
DESIRED_WORKERS = Gauge(
    "taskgate_desired_workers",
    "Workers the kind needs: arrival rate x mean task time (+ the ready backlog drained in"
    " AUTOSCALE_DRAIN_S) / a worker's concurrency, within AUTOSCALE_MIN/MAX_WORKERS",
    ["kind"],
)


def set_autoscaling(loads: Iterable[KindLoad]) -> None:
    """Set the autoscaling gauges from a fresh measurement."""
    for load in loads:
        kind = load.kind
        if load.ready is not None and load.consumers is not None:
            QUEUE_READY.labels(kind).set(load.ready)
            QUEUE_CONSUMERS.labels(kind).set(load.consumers)
        QUEUE_UNACKED.labels(kind).set(load.unacked)
        QUEUE_OLDEST_AGE.labels(kind).set(load.oldest_ready_age_s)
        TASK_ARRIVALS.labels(kind).set(load.arrivals_per_s)
        TASK_COMPLETIONS.labels(kind).set(load.completions_per_s)
        if load.mean_task_s is not None:
            TASK_MEAN_SECONDS.labels(kind).set(load.mean_task_s)
        DESIRED_WORKERS.labels(kind).set(load.desired_workers)


class _BrokerBlocked(Collector):
    """Seconds the broker blocked this process's publishers, read at scrape time.

    A counter incremented at each unblock would stand still for the whole alarm,
    just when someone looks at it.
    """

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(
            "taskgate_broker_blocked_seconds",
            "Time the broker blocked this process's publishers (memory or disk alarm)",
            value=blocked_seconds_total(),
        )


REGISTRY.register(_BrokerBlocked())


@documented(
    "Prometheus metrics",
    responses={200: Media("text/plain", "Prometheus' text format")},
    errors=(401, 404),
    auth="metrics",
    description="404 unless METRICS_TOKEN is set; the token is not a user's.",
)
async def metrics(request: Request) -> Response:
    """The process's metrics in Prometheus' text format, for the holder of METRICS_TOKEN."""
    settings: GatewaySettings = request.app.state.settings
    if not settings.metrics_token:
        raise HttpError(404, "not_found", "Not Found")
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    expected = settings.metrics_token.encode()
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected):
        raise HttpError(
            401,
            "unauthorized",
            "send Authorization: Bearer <METRICS_TOKEN>",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
