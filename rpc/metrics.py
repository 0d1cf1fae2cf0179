"""Prometheus metrics of RPC calls, on both sides: count and latency by method and outcome.

``outcome`` is ``ok``, a remote error's type (``UnknownSku``, ``BadRequest``,
``InternalError`` …) or, for callers, ``timeout``, ``no_server``,
``unavailable`` or ``closed``.
"""

from __future__ import annotations

import os

from prometheus_client import Histogram, start_http_server

# From a sub-millisecond broker round trip to the slowest timeout people set.
LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

CLIENT_SECONDS = Histogram(
    "taskgate_rpc_client_seconds",
    "RPC calls made: latency by method and outcome",
    ["method", "outcome"],
    buckets=LATENCY_BUCKETS_S,
)
SERVER_SECONDS = Histogram(
    "taskgate_rpc_server_seconds",
    "RPC requests handled: time in the handler by method and outcome",
    ["method", "outcome"],
    buckets=LATENCY_BUCKETS_S,
)


def serve_metrics_from_env() -> int | None:
    """Expose this process's metrics over HTTP on METRICS_PORT (127.0.0.1), if set."""
    port = os.environ.get("METRICS_PORT", "").strip()
    if not port:
        return None
    start_http_server(int(port), addr=os.environ.get("METRICS_HOST", "127.0.0.1"))
    return int(port)
