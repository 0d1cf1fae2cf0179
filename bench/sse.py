"""Benchmark: SSE streams held by one server process, memory per stream, delivery latency.

Measures taskgate's gateway (``python -m gateway``) and, in the same run on the
same broker, a baseline with one exclusive auto-delete queue per client, the
common tutorial design (``bench/sse_baseline_app.py``). For each side:

1. N concurrent SSE subscribers (one task each by default) on one server
   process: streams held, and RSS per idle stream = (server RSS with the
   streams open - RSS before) / N; also the broker's RSS growth per stream;
2. E ``progress`` events/s for S seconds, published as workers publish them
   (persistent, confirmed, to the ``status`` exchange) to random tasks among
   the N: latency from the event's ``timestamp`` to its receipt by a client
   (p50/p99/max), events published vs delivered, deliveries/s, and where the
   CPU went meanwhile.

The gateway's side runs as it does in production: each stream is a user of
its own with a Bearer token (SECRET_KEY is made up per run) and watches a task
that user owns; the tasks are recorded in the gateway's SQLite store with its
own store class before it starts. The baseline has neither auth nor store.

The clients are a minimal asyncio HTTP/1.1 reader running in separate
processes (uvloop, ``--client-procs``), connecting from several loopback
source addresses (127.0.0.x) so no address runs short of ephemeral ports. This
process publishes. All traffic stays on loopback; every wait has a bound.

    python bench/sse.py                                  # 5,000 streams, 1,000 events/s, 10 s
    python bench/sse.py --streams 5000 --rate 1000 --seconds 10
    python bench/sse.py --hold-only --streams 20000      # streams held, memory, idle CPU
    python bench/sse.py --hold-only --streams 40000 --sides taskgate
    AMQP_URL=amqp://... python bench/sse.py              # a scratch broker of yours
    python bench/sse.py --tiny                           # seconds: checks that it works
    python bench/sse.py --cluster                        # + the gateway on a 3-node cluster

``--cluster`` measures the gateway a third time, as the ``cluster`` column: the
same streams and events on a private 3-node cluster (or AMQP_CLUSTER_URL's),
where the journal shards are quorum queues with a replica on each node and the
gateway and publisher get the URL naming all three.

Targets for one process: 20,000 streams held; p99 < 100 ms at 1,000 events/s
spread over 5,000 subscribers; < 20 KB per idle stream.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import math
import secrets
import shlex
import signal
import sys
from pathlib import Path

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import broker, check_measured, cluster
from bench.common import parse_args as parse_with_tiny
from bench.sse_client import raise_nofile_limit
from bench.sse_publish import Publisher
from bench.sse_record import broker_ceiling
from bench.sse_report import report
from bench.sse_side import (
    Bench,
    SideResult,
    baseline_spec,
    gateway_spec,
    measure_side,
    owner_of,
)

# Streams one client process and one source address take on by default: well under
# the open-files limit (20,000 here) and the ~28,000 ephemeral ports of one address.
STREAMS_PER_CLIENT_PROC = 10_000
STREAMS_PER_SOURCE_ADDRESS = 10_000
# Streams end when their token expires; this outlasts any run.
TOKEN_TTL_S = 6 * 3600.0
TINY = {
    "streams": 20,
    "rate": 50,
    "seconds": 1,
    "idle_seconds": 0.5,
    "drain_seconds": 5,
    "ceiling_events": 400,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--streams", type=int, default=5_000, help="SSE subscribers (5000)")
    parser.add_argument(
        "--tasks", type=int, help="distinct tasks; streams share them (default: one each)"
    )
    parser.add_argument("--rate", type=float, default=1_000, help="events/s published (1000)")
    parser.add_argument("--seconds", type=float, default=10, help="publishing time (10)")
    parser.add_argument("--hold-only", action="store_true", help="only open and hold the streams")
    parser.add_argument(
        "--ceiling-events",
        type=int,
        default=20_000,
        help="events for the broker's own ceiling on the same flow, after the sides "
        "(bench/sse_record.py; 0: not measured) (20000)",
    )
    parser.add_argument(
        "--sides",
        default="baseline,taskgate",
        help="which servers, in this order (baseline first: the gateway declares the durable "
        "status journal shards, which would also collect the baseline's events on the broker)",
    )
    parser.add_argument(
        "--idle-seconds",
        type=float,
        help="idle time with the streams open before RSS is read (2; 16 with --hold-only, "
        "past one 15 s heartbeat)",
    )
    parser.add_argument("--client-procs", type=int, help="client processes (1 per 10,000 streams)")
    parser.add_argument(
        "--source-addresses", type=int, help="127.0.0.x addresses per side (1 per 10,000 streams)"
    )
    parser.add_argument(
        "--connect-concurrency",
        type=int,
        default=256,
        help="streams opening at once per client process",
    )
    parser.add_argument("--connect-timeout", type=float, default=300, help="bound on opening (s)")
    parser.add_argument(
        "--stall-seconds",
        type=float,
        default=20,
        help="give up opening after this long without progress",
    )
    parser.add_argument(
        "--drain-seconds", type=float, default=15, help="bound on the wait for deliveries (s)"
    )
    parser.add_argument(
        "--setup-timeout", type=float, default=300, help="bound on creating the tasks (s)"
    )
    parser.add_argument(
        "--baseline-streams-per-connection",
        type=int,
        default=1_000,
        help="channels per AMQP connection",
    )
    parser.add_argument("--seed", type=int, default=1, help="picks the tasks events go to")
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="also measure the gateway on a 3-node cluster (quorum journal shards), "
        "reported beside as the 'cluster' column",
    )
    args = parse_with_tiny(parser, TINY, argv)
    args.tasks = args.tasks or args.streams
    if args.idle_seconds is None:
        args.idle_seconds = 16.0 if args.hold_only else 2.0
    args.client_procs = args.client_procs or max(
        1, math.ceil(args.streams / STREAMS_PER_CLIENT_PROC)
    )
    args.source_addresses = args.source_addresses or max(
        1, math.ceil(args.streams / STREAMS_PER_SOURCE_ADDRESS)
    )
    args.sides = [side.strip() for side in args.sides.split(",") if side.strip()]
    unknown = set(args.sides) - {"baseline", "taskgate"}
    if unknown:
        parser.error(f"unknown sides: {sorted(unknown)}")
    return args


async def run_bench(
    args: argparse.Namespace, url: str, broker_pid: int | None, tmp: Path
) -> tuple[list[SideResult], Bench, float | None]:
    from gateway.tokens import mint

    publisher = Publisher(url)
    await publisher.open()
    secret = secrets.token_hex(32)
    bench = Bench(
        args=args,
        url=url,
        broker_pid=broker_pid,
        publisher=publisher,
        workdir=tmp,
        task_ids=[],
        secret=secret,
        tokens=[mint(secret, owner_of(k), ttl_s=TOKEN_TTL_S) for k in range(args.tasks)],
        sources_per_side=args.source_addresses,
    )
    results = []
    try:
        for index, side in enumerate(args.sides):
            # Tasks of its own per side: on a broker where a gateway ran before, the durable
            # journal shards keep the baseline's events, and the gateway would stream them.
            bench.task_ids = [f"sse{k:06d}{secrets.token_hex(4)}" for k in range(args.tasks)]
            if side == "taskgate":
                spec = gateway_spec(url, tmp / "gateway", bench.secret, bench.streams_per_task)
            else:
                spec = baseline_spec(url, args.baseline_streams_per_connection)
            print(f"{side}: starting", flush=True)
            results.append(await measure_side(bench, spec, index))
    finally:
        await publisher.close()
    if args.cluster:
        results.append(await measure_on_cluster(bench, len(args.sides)))
    ceiling = None
    if args.ceiling_events and not args.hold_only:
        print("broker ceiling: measuring", flush=True)
        ceiling = await broker_ceiling(url, args.ceiling_events, tasks=2_000, window=500)
    return results, bench, ceiling


async def measure_on_cluster(bench: Bench, side_index: int) -> SideResult:
    """The gateway's side again, with the gateway and the publisher on a 3-node cluster."""
    with contextlib.ExitStack() as stack:
        print("cluster: starting 3 nodes", flush=True)
        # In a thread: the nodes take tens of seconds to boot, and the loop has work meanwhile.
        url, pid = await asyncio.to_thread(stack.enter_context, cluster("bench-sse-cluster-"))
        publisher = Publisher(url)
        await publisher.open()
        try:
            on_cluster = dataclasses.replace(
                bench,
                url=url,
                broker_pid=pid,
                publisher=publisher,
                task_ids=[f"ssc{k:06d}{secrets.token_hex(4)}" for k in range(bench.args.tasks)],
            )
            spec = gateway_spec(
                url, bench.workdir / "gateway-cluster", bench.secret, bench.streams_per_task
            )
            spec = dataclasses.replace(
                spec, name="cluster", note=f"{spec.note}; on 3 nodes (broker RSS: the first)"
            )
            print("cluster: starting", flush=True)
            return await measure_side(on_cluster, spec, side_index)
        finally:
            await publisher.close()
            await asyncio.to_thread(stack.close)


async def main_async(
    args: argparse.Namespace, url: str, broker_pid: int | None, tmp: Path
) -> tuple[list[SideResult], Bench, float | None]:
    # SIGTERM ends the run like Ctrl-C: cancelled, so every finally block closes what it opened.
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await run_bench(args, url, broker_pid, tmp)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    limit = raise_nofile_limit()
    cli = shlex.join([Path(sys.executable).name, *sys.argv])
    try:
        with broker("bench-sse-") as (url, broker_pid, tmp):
            results, bench, ceiling = uvloop.run(main_async(args, url, broker_pid, tmp))
    except (KeyboardInterrupt, asyncio.CancelledError):
        # Every finally block has run by now: servers, clients and broker stopped, temp dir gone.
        print("interrupted; everything the bench started is stopped", file=sys.stderr)
        return 130
    report(results, bench, cli, limit)
    counts = {f"{r.name}.streams_held": r.held_after_open or 0 for r in results}
    if ceiling is not None:
        print(
            f"broker ceiling, same flow (persistent, confirmed, consumed with acks from the "
            f"journal shards, no gateway): {ceiling:,.0f} events/s"
        )
        for r in results:
            rate = r.deliveries_per_s or 0.0
            print(f"  {r.name} delivered {rate:,.0f} events/s = {rate / ceiling:.0%} of it")
        counts["broker.ceiling_events_per_s"] = ceiling
    if not args.hold_only:
        counts |= {f"{r.name}.deliveries": r.delivered for r in results}
    measured = check_measured(counts)
    return measured if all(r.error is None for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
