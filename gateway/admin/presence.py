"""The workers and rpc servers online, as the overview shows them, from their heartbeats
(``infra.presence``), and the RPC latency per method their heartbeats carry."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from infra.presence import Present
from rpc.latency import merge, quantile

# A process is gone after this many heartbeat intervals without one.
MISSED_BEATS = 3


def workers(present: Iterable[Present]) -> list[dict[str, Any]]:
    return [
        {**_process(p), "kinds": _strings(p.report.get("kinds")), "running": _running(p.report)}
        for p in present
        if p.role == "worker"
    ]


def rpc_servers(present: Iterable[Present]) -> list[dict[str, Any]]:
    return [
        {**_process(p), "methods": _strings(p.report.get("methods"))}
        for p in present
        if p.role == "rpc"
    ]


def rpc_methods(present: Iterable[Present]) -> list[dict[str, Any]]:
    """Calls, errors and latency quantiles per method over every rpc server's last 15 minutes."""
    calls = merge(
        p.report["calls"].items()
        for p in present
        if p.role == "rpc" and isinstance(p.report.get("calls"), dict)
    )
    return [
        {
            "method": method,
            "calls": stats["calls"],
            "errors": stats["errors"],
            "p50_ms": quantile(stats["buckets"], 0.5),
            "p99_ms": quantile(stats["buckets"], 0.99),
        }
        for method, stats in calls.items()
    ]


def _process(p: Present) -> dict[str, Any]:
    return {
        "name": p.name,
        "host": p.host,
        "pid": p.pid,
        "started_at": p.started_at,
        "seen_at": p.seen_at,
    }


def _strings(value: object) -> list[str]:
    return [str(item) for item in value] if isinstance(value, list) else []


def _running(report: dict[str, Any]) -> list[dict[str, Any]]:
    running = report.get("running")
    if not isinstance(running, list):
        return []
    return [
        {"task_id": str(t.get("task_id")), "kind": str(t.get("kind")), "since": t.get("since")}
        for t in running
        if isinstance(t, dict)
    ]
