"""Serving a process's Prometheus metrics over HTTP."""

from __future__ import annotations

import os

from prometheus_client import start_http_server


def serve_metrics_from_env() -> int | None:
    """Expose this process's metrics over HTTP on METRICS_PORT (127.0.0.1), if set."""
    port = os.environ.get("METRICS_PORT", "").strip()
    if not port:
        return None
    start_http_server(int(port), addr=os.environ.get("METRICS_HOST", "127.0.0.1"))
    return int(port)
