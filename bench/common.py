"""What every benchmark shares: its broker (or cluster), its arguments (the tiny mode),
stopping a child, rounds against a baseline and their medians, percentiles, and the check
that it measured.

The scripts run as ``python bench/X.py``: each puts the repository first on
``sys.path`` (bench/rpc.py would shadow the rpc package otherwise) and imports
this module as ``bench.common``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parent.parent
T = TypeVar("T")


# --- the broker ---------------------------------------------------------------------------


@contextlib.contextmanager
def broker(prefix: str) -> Iterator[tuple[str, int | None, Path]]:
    """(AMQP URL, broker pid or None, a temp dir): AMQP_URL's broker, else a private node.

    The private node lives in the temp dir and is stopped (and the dir removed) on exit.
    """
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp_dir:
        tmp = Path(tmp_dir)
        url = os.environ.get("AMQP_URL")
        if url is not None:
            yield url, None, tmp
            return
        from infra.node import BrokerNode, NodeConfig

        node = BrokerNode(NodeConfig.on_free_ports(tmp / "broker"))
        node.start()
        try:
            yield node.amqp_url, node.pid, tmp
        finally:
            node.stop()


@contextlib.contextmanager
def cluster(prefix: str) -> Iterator[tuple[str, int | None]]:
    """(AMQP URL naming every node, the first node's pid or None): AMQP_CLUSTER_URL's
    cluster, else a private 3-node cluster (infra/cluster.py) in a temp dir, stopped (and
    the dir removed) on exit. Task queues and journal shards get a replica on each node."""
    url = os.environ.get("AMQP_CLUSTER_URL")
    if url is not None:
        yield url, None
        return
    from infra.cluster import BrokerCluster

    with tempfile.TemporaryDirectory(prefix=prefix) as tmp_dir:
        nodes = BrokerCluster.on_free_ports(Path(tmp_dir))
        try:
            nodes.start()
            yield nodes.amqp_url, nodes.nodes[0].pid
        finally:
            nodes.stop()


# --- arguments ----------------------------------------------------------------------------


def parse_args(
    parser: argparse.ArgumentParser, tiny: dict[str, Any], argv: list[str] | None = None
) -> argparse.Namespace:
    """Parse ``argv`` with a ``--tiny`` flag whose run takes seconds (the test suite runs it).

    ``--tiny`` changes only the defaults, to ``tiny``: options given still win.
    """
    shown = ", ".join(f"--{name.replace('_', '-')} {value}" for name, value in tiny.items())
    parser.add_argument(
        "--tiny",
        action="store_true",
        help=f"a run of seconds that only checks the bench works ({shown})",
    )
    known, _ = parser.parse_known_args(argv)
    if known.tiny:
        parser.set_defaults(**tiny)
    return parser.parse_args(argv)


# --- processes ----------------------------------------------------------------------------


def run(coro: Coroutine[Any, Any, T], loop: str = "uvloop") -> T:
    """Run ``coro`` on uvloop (as the servers run) or plain asyncio."""
    if loop == "uvloop":
        import uvloop

        return uvloop.run(coro)
    return asyncio.run(coro)


def stop_process(child: subprocess.Popen[Any], timeout_s: float = 30.0) -> int | None:
    """SIGTERM, then SIGKILL if ``child`` still runs after ``timeout_s``; its exit code."""
    if child.poll() is None:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout_s)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    return child.returncode


# --- figures ------------------------------------------------------------------------------


def percentile_ms(latencies_s: list[float], q: float) -> float:
    """The ``q`` quantile (nearest rank) of ``latencies_s`` in ms; NaN when there are none."""
    if not latencies_s:
        return math.nan
    ordered = sorted(latencies_s)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def ratio(ours: float, base: float) -> float:
    return ours / base if base else math.inf


async def alternate(
    rounds: int,
    base: Callable[[], Awaitable[float]],
    ours: Callable[[], Awaitable[float]],
    names: tuple[str, str],
    unit: str,
) -> list[tuple[float, float]]:
    """(base, ours) rates of ``rounds`` rounds, each side warm, each round printed."""
    results = []
    for i in range(rounds):
        # Alternate which side goes first: neither always inherits the other's backlog or
        # a cache the other warmed.
        if i % 2 == 0:
            b = await base()
            o = await ours()
        else:
            o = await ours()
            b = await base()
        print(
            f"round {i + 1}: {names[0]} {b:>9,.1f}  {names[1]} {o:>9,.1f} {unit}  "
            f"ratio {ratio(o, b):.2f}x",
            flush=True,
        )
        results.append((b, o))
    return results


async def rotate(
    rounds: int, sides: Mapping[str, Callable[[], Awaitable[float]]], unit: str
) -> dict[str, list[float]]:
    """Each side's rate in each of ``rounds`` rounds; every side runs once a round, warm.

    The order turns by one side each round, so no side always inherits another's backlog.
    """
    names = list(sides)
    rates: dict[str, list[float]] = {name: [] for name in names}
    for i in range(rounds):
        shift = i % len(names)
        for name in names[shift:] + names[:shift]:
            rates[name].append(await sides[name]())
        print(
            f"round {i + 1}: "
            + "  ".join(f"{name} {rates[name][-1]:,.0f}" for name in names)
            + f" {unit}",
            flush=True,
        )
    return rates


@dataclass
class Medians:
    """The medians of rounds of (base, ours), and the range of their ratios."""

    base: float
    ours: float
    ratio: float
    low: float
    high: float

    @classmethod
    def of(cls, results: list[tuple[float, float]]) -> Medians:
        ratios = [ratio(o, b) for b, o in results]
        return cls(
            base=statistics.median(b for b, _ in results),
            ours=statistics.median(o for _, o in results),
            ratio=statistics.median(ratios),
            low=min(ratios),
            high=max(ratios),
        )


def check_measured(counts: Mapping[str, float]) -> int:
    """Print what each side measured; 0 if every count is > 0, else 1 (say which was not).

    A benchmark whose side measured nothing must not pass for one that ran: its
    exit status says so, and the ``measured:`` line is what the tiny tests read.
    """
    print("measured: " + " ".join(f"{name}={count:g}" for name, count in counts.items()))
    empty = [name for name, count in counts.items() if not count > 0]
    for name in empty:
        print(f"FAILED: {name} is {counts[name]:g}: that side measured nothing", file=sys.stderr)
    return 1 if empty else 0
