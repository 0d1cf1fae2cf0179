"""Benchmark: RPC round trips/s and latency, taskgate vs aio_pika.patterns.RPC.

Each implementation gets its own server process and is driven from this
process, on the same broker, in the same run, at 1 and 64 calls in flight.

    python bench/rpc.py                      # starts a private broker
    AMQP_URL=amqp://... python bench/rpc.py  # uses that broker
    python bench/rpc.py --seconds 5 --reply-mode queue
    python bench/rpc.py --tiny               # seconds: checks that it works
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aio_pika
from aio_pika.patterns import RPC

import rpc as taskgate_rpc
from bench.common import broker, check_measured, parse_args, percentile_ms, run, stop_process

READY = "ready"


@dataclass
class Result:
    in_flight: int
    calls: int
    seconds: float
    latencies_s: list[float]

    @property
    def per_s(self) -> float:
        return self.calls / self.seconds

    def pct_ms(self, q: float) -> float:
        return percentile_ms(self.latencies_s, q)


async def drive(call, in_flight: int, seconds: float) -> Result:
    """Run ``in_flight`` loops of sequential calls for ``seconds``; record every latency."""
    latencies: list[float] = []
    for i in range(50):  # warm-up
        await call(i)
    deadline = time.perf_counter() + seconds

    async def loop(worker: int) -> None:
        n = worker
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            assert await call(n) == n + 1
            latencies.append(time.perf_counter() - started)
            n += in_flight

    started = time.perf_counter()
    await asyncio.gather(*(loop(w) for w in range(in_flight)))
    return Result(in_flight, len(latencies), time.perf_counter() - started, latencies)


# --- servers (run in child processes) -----------------------------------------------


async def serve_taskgate(url: str) -> None:
    server = taskgate_rpc.RpcServer("bench")

    @server.method("bench.add")
    async def add(params: dict) -> int:
        return params["a"] + params["b"]

    connection = await taskgate_rpc.connect_wire(url, name="bench-server")
    await server.start(connection, prefetch=256, concurrency=256)
    await _until_terminated()
    await server.stop()
    await connection.close()


async def serve_aio_pika(url: str) -> None:
    connection = await aio_pika.connect_robust(url)
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=256)
    rpc = await RPC.create(channel)

    async def add(*, a: int, b: int) -> int:
        return a + b

    await rpc.register("bench.add", add, auto_delete=True)
    await _until_terminated()
    await connection.close()


async def _until_terminated() -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print(READY, flush=True)
    await stop.wait()


# --- clients -----------------------------------------------------------------------


async def bench_taskgate(url: str, args: argparse.Namespace) -> list[Result]:
    connection = await taskgate_rpc.connect_wire(url, name="bench-client")
    client = await taskgate_rpc.RpcClient.create(connection, reply_mode=args.reply_mode)

    async def call(n: int) -> int:
        return await client.call("bench.add", {"a": n, "b": 1})

    try:
        return [await drive(call, k, args.seconds) for k in (1, 64)]
    finally:
        await client.close()
        await connection.close()


async def bench_aio_pika(url: str, args: argparse.Namespace) -> list[Result]:
    connection = await aio_pika.connect_robust(url)
    channel = await connection.channel()
    rpc = await RPC.create(channel)

    async def call(n: int) -> int:
        return await rpc.call("bench.add", kwargs={"a": n, "b": 1})

    try:
        return [await drive(call, k, args.seconds) for k in (1, 64)]
    finally:
        await rpc.close()
        await connection.close()


def start_server(kind: str, url: str, loop: str) -> subprocess.Popen[str]:
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", kind, "--loop", loop, "--url", url],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    if child.stdout.readline().strip() != READY:
        child.kill()
        raise RuntimeError(f"{kind} server did not start")
    return child


def report(name: str, results: list[Result]) -> None:
    for r in results:
        print(
            f"{name:<22} in_flight={r.in_flight:<3} {r.per_s:>9,.0f} calls/s  "
            f"p50={r.pct_ms(0.5):7.3f} ms  p99={r.pct_ms(0.99):7.3f} ms  ({r.calls} calls)"
        )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each measurement")
    parser.add_argument(
        "--loop",
        choices=["uvloop", "asyncio"],
        default="uvloop",
        help="event loop for every process, baseline included",
    )
    parser.add_argument("--reply-mode", choices=["direct", "queue"], default="queue")
    parser.add_argument("--serve", choices=["taskgate", "aio-pika"], help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parse_args(parser, tiny={"seconds": 0.5})

    if args.serve:
        serve = serve_taskgate if args.serve == "taskgate" else serve_aio_pika
        run(serve(args.url), args.loop)
        return 0

    with broker("bench-rpc-") as (url, _, _):
        figures = {}
        for name, kind, bench in (
            ("aio_pika.patterns.RPC", "aio-pika", bench_aio_pika),
            (f"taskgate ({args.reply_mode})", "taskgate", bench_taskgate),
        ):
            server = start_server(kind, url, args.loop)
            try:
                figures[name] = run(bench(url, args), args.loop)
            finally:
                stop_process(server, 10)
            report(name, figures[name])

    (base1, base64), (ours1, ours64) = figures.values()
    print(f"\nloop={args.loop}, {os.cpu_count()} cores, {args.seconds:g} s per measurement")
    print(f"ratio at 64 in flight (calls/s): {ours64.per_s / base64.per_s:.2f}x  (target >= 2x)")
    print(
        f"p50 at 1 in flight: {ours1.pct_ms(0.5):.3f} ms vs baseline {base1.pct_ms(0.5):.3f} ms "
        f"(ratio {ours1.pct_ms(0.5) / base1.pct_ms(0.5):.2f}, target <= 1)"
    )
    return check_measured(
        {
            f"{side}.calls.{r.in_flight}": r.calls
            for side, results in zip(("aio_pika", "taskgate"), figures.values(), strict=True)
            for r in results
        }
    )


if __name__ == "__main__":
    sys.exit(main())
