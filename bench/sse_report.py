"""The table bench/sse.py prints: both sides next to each other, with the targets."""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from typing import Any

from bench.sse_client import WANTED_NOFILE
from bench.sse_side import Bench, SideResult

TARGET_STREAMS = 20_000
TARGET_P99_MS = 100.0
TARGET_KB_PER_STREAM = 20.0


def fmt(value: float | int | None, spec: str = ",.0f") -> str:
    return "-" if value is None else format(value, spec)


def verdict(ok: bool | None) -> str:
    return "" if ok is None else ("  met" if ok else "  MISSED")


def report(results: list[SideResult], bench: Bench, cli: str, server_limit: int) -> None:
    args = bench.args
    by_name = {r.name: r for r in results}
    columns = [by_name[name] for name in ("taskgate", "cluster", "baseline") if name in by_name]
    print()
    print(f"command: {cli}")
    ceiling = (
        ""
        if server_limit >= WANTED_NOFILE
        else " (the hard limit; raising it needs CAP_SYS_RESOURCE)"
    )
    print(
        f"machine: {os.cpu_count()} cores; open-files limit {server_limit:,} per process{ceiling}; "
        f"broker: {'a private RabbitMQ node' if bench.broker_pid else 'AMQP_URL'}"
    )
    print(
        f"clients: {args.client_procs} process(es) (uvloop, raw HTTP/1.1), "
        f"{bench.sources_per_side} source address(es) per side; publisher: this process; "
        f"one server process per side, run one after the other"
    )
    for r in columns:
        print(f"{r.name}: {r.note}")
    print()
    header = f"{'':34}" + "".join(f"{r.name:>14}" for r in columns) + "   target"
    print(header)
    print("-" * len(header))
    for label, values, target in rows(columns, args):
        print(f"{label:34}" + "".join(f"{v:>14}" for v in values) + target)
    for r in columns:
        details = []
        if r.failures:
            details.append(f"failed streams: {dict(r.failures)}")
        if r.server_fds is not None:
            details.append(f"server fds {r.server_fds:,} of {fmt(r.server_fd_limit)}")
        if r.at_fd_limit:
            details.append("the server reached its open-files limit (one socket per stream)")
        if r.undecodable:
            details.append(f"{r.undecodable} undecodable data lines")
        details.append(f"server exit code {r.exit_code}")
        if r.error:
            details.append(f"ERROR {r.error}")
        print(f"{r.name}: " + "; ".join(details))


def rows(
    columns: list[SideResult], args: argparse.Namespace
) -> Iterator[tuple[str, list[str], str]]:
    """(label, one value per side, target) lines; a verdict (for taskgate) where the run fits."""

    def each(get: Any, spec: str = ",.0f") -> list[str]:
        return [fmt(get(r), spec) for r in columns]

    gateway = next((r for r in columns if r.name == "taskgate"), None)

    def target(text: str, applies: bool, value: Any, ok: Any) -> str:
        measured = None if gateway is None else value(gateway)
        return f"   {text}{verdict(ok(measured) if applies and measured is not None else None)}"

    held_applies = args.hold_only and args.streams >= TARGET_STREAMS
    p99_applies = args.rate >= 1_000 and args.streams >= 5_000
    yield "streams requested", each(lambda r: r.requested), ""
    yield (
        "streams held (after idle)",
        each(lambda r: r.held_after_open),
        target(
            f">= {TARGET_STREAMS:,}" + ("" if held_applies else " (--hold-only --streams 20000)"),
            held_applies,
            lambda r: r.held_after_open,
            lambda held: held >= TARGET_STREAMS,
        )
        + (" (server at its open-files limit)" if gateway and gateway.at_fd_limit else ""),
    )
    yield "time to open them (s)", each(lambda r: r.open_seconds, ".1f"), ""
    yield "server RSS ready (MB)", each(lambda r: _mb(r.rss_ready_kb), ".1f"), ""
    yield "server RSS before streams (MB)", each(lambda r: _mb(r.rss_before_kb), ".1f"), ""
    yield "server RSS with streams (MB)", each(lambda r: _mb(r.rss_after_kb), ".1f"), ""
    yield (
        "server RSS per idle stream (KB)",
        each(lambda r: _kib_to_kb(r.kb_per_stream), ".1f"),
        target(
            f"< {TARGET_KB_PER_STREAM:g}",
            True,
            lambda r: _kib_to_kb(r.kb_per_stream),
            lambda kb: kb < TARGET_KB_PER_STREAM,
        ),
    )
    yield (
        "broker RSS growth per stream (KB)",
        each(lambda r: _kib_to_kb(r.broker_kb_per_stream), ".1f"),
        "",
    )
    yield (
        f"server CPU idle, {args.idle_seconds:g} s (% core)",
        each(lambda r: r.idle_cpu.get("server"), ".1f"),
        "",
    )
    if args.hold_only:
        return
    yield "events published", each(lambda r: r.published and r.published.published), ""
    yield "events/s published", each(lambda r: r.published and r.published.per_s), ""
    yield "deliveries expected", each(lambda r: r.published and r.expected), ""
    yield "deliveries received", each(lambda r: r.published and r.delivered), ""
    yield "deliveries/s", each(lambda r: r.deliveries_per_s), ""
    yield "latency p50 (ms)", each(lambda r: r.latency_ms(0.50), ".1f"), ""
    yield (
        "latency p99 (ms)",
        each(lambda r: r.latency_ms(0.99), ".1f"),
        target(
            f"< {TARGET_P99_MS:g}" + ("" if p99_applies else " (at 1,000/s over 5,000 streams)"),
            p99_applies,
            lambda r: r.latency_ms(0.99),
            lambda p99: p99 < TARGET_P99_MS,
        ),
    )
    yield "latency max (ms)", each(lambda r: r.latency_ms(1.0), ".1f"), ""
    yield (
        f"deliveries later than {TARGET_P99_MS:g} ms",
        each(lambda r: r.published and r.late(TARGET_P99_MS / 1000)),
        "",
    )
    yield "streams held at the end", each(lambda r: r.held_at_end), ""
    yield (
        "server CPU per delivered event (us)",
        each(_cpu_per_delivery_us, ".0f"),
        "   <= 150 (issue 15)",
    )
    yield "CPU while publishing, % of a core", ["" for _ in columns], ""
    for name, label in CPU_ROWS:
        yield label, each(lambda r, n=name: r.busy_cpu.get(n), ".0f"), ""


CPU_ROWS = (
    ("server", "  server process"),
    ("clients", "  client processes"),
    ("publisher", "  publisher (bench process)"),
    ("broker", "  broker (beam.smp)"),
    ("others", "  other processes on the machine"),
    ("machine", "  machine, % of all cores"),
)


def _cpu_per_delivery_us(result: SideResult) -> float | None:
    """The server's CPU time per event it delivered (and, for taskgate, recorded): its
    /proc CPU time from the first publish until the deliveries were in, per delivery.

    Process CPU time rather than a share of the wall clock, so that other processes on
    the machine slow the run down without inflating the figure (much: they still take
    caches and cause context switches).
    """
    if result.server_cpu_s is None or not result.delivered:
        return None
    return result.server_cpu_s / result.delivered * 1e6


def _mb(kib: int | None) -> float | None:
    return None if kib is None else kib * 1024 / 1e6


def _kib_to_kb(kib: float | None) -> float | None:
    return None if kib is None else kib * 1.024
