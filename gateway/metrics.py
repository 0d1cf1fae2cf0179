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
from collections.abc import Iterator

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

from rpc.wire.protocol import blocked_seconds_total

from .errors import HttpError
from .settings import GatewaySettings

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
