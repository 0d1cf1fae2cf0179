"""Prometheus metrics of RPC calls, on both sides: count and latency by method and outcome.

``outcome`` is ``ok``, a remote error's type (``UnknownSku``, ``BadRequest``,
``InternalError`` …) or, for callers, ``timeout``, ``no_server``,
``unavailable`` or ``closed``.
"""

from __future__ import annotations

from prometheus_client import Histogram

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
