"""Serving a process's Prometheus metrics over HTTP."""

from __future__ import annotations

from prometheus_client import start_http_server


def serve_metrics(port: int | None, host: str = "127.0.0.1") -> int | None:
    """Expose this process's metrics over HTTP on ``port`` (METRICS_PORT), if there is one."""
    if port is None:
        return None
    start_http_server(port, addr=host)
    return port
