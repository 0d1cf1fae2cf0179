"""Benchmark: 202s/s for a ~100 KB JPEG through POST /uploads, the gateway vs two baselines.

All servers run as one uvicorn process each, on the same broker, in the same
run, and get the same load from this process: N concurrent loops, each with its
own httpx client and connection, posting the same multipart body (and the same
Bearer token, which only the gateway checks) for a fixed time after a short
warm-up. Only 202s count as successes; any other status or transport error is
reported, with the tail of that server's log.

- taskgate: ``python -m gateway`` with its own SQLite store, storage dir and a
  unique upload kind, so its tasks pile up (no worker runs) in their own queue.
- seed-style: bench/uploads_baseline_app.py, which opens a blocking pika
  connection per request inside the async handler (no publisher confirms).
- hand-written: bench/uploads_careful_app.py, what a careful team writes: one
  shared aio-pika channel with confirms, the file and a SQLite row written off
  the event loop, a persistent message (no auth, sniffing or outbox).

    python bench/uploads.py                      # starts a private broker
    AMQP_URL=amqp://... python bench/uploads.py  # uses that broker
    python bench/uploads.py --seconds 5 --concurrency 32
    python bench/uploads.py --storage-root /dev/shm  # uploads on tmpfs
    python bench/uploads.py --tiny                   # seconds: checks that it works

Targets: the gateway's 202s/s >= 10x the seed-style app's and >= 1x the
hand-written one's, at <= 1 ms of gateway CPU per 202. CPU per 202 (from
/proc) is shown for the server, the broker (private broker only) and this
client, to tell where the time goes, and so is the CPU the rest of the machine
used meanwhile: client, servers and broker share the cores, so figures taken
while something else runs are low and noisy.
"""

from __future__ import annotations

import argparse
import importlib.util
import secrets
import sys
import tempfile
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# httpcore 1.0.x imports sniffio on every request and falls back to asyncio when
# it is missing; a failed import is not cached, so each request pays a sys.path
# scan (~15 % of this client's CPU here, see encode/httpcore#1103). A None entry
# makes that failed import immediate; it changes nothing else.
if importlib.util.find_spec("sniffio") is None:
    sys.modules["sniffio"] = None  # type: ignore[assignment]

import aio_pika

from bench.common import broker, check_measured, parse_args, ratio, run
from bench.servers import ServerProcess
from bench.uploads_load import Load, Result, make_jpeg, measure, multipart_body
from bench.uploads_report import print_header, report, report_server_trouble
from gateway.tokens import mint
from workers.topology import dead_queue, task_queue

# The bench user's access token outlives any run.
TOKEN_TTL_S = 3600


def start_gateway(
    url: str, work_dir: Path, storage: Path, kind: str, secret_key: str
) -> ServerProcess:
    env = {
        "AMQP_URL": url,
        "SECRET_KEY": secret_key,
        "DATABASE_PATH": str(work_dir / "taskgate.db"),
        "STORAGE_DIR": str(storage),
        "UPLOAD_KIND": kind,
        # One user sends every upload and no worker runs: its tasks pile up by design.
        "UPLOADS_PER_USER": "1000",
        "TASKS_IN_FLIGHT_PER_USER": "1000000000",
    }
    argv = [sys.executable, "-m", "gateway"]
    return ServerProcess("taskgate gateway", argv, env, work_dir / "gateway.log")


# The baselines: their display names and the modules of their apps.
BASELINES = {
    "seed_style": ("seed-style (pika per request)", "bench.uploads_baseline_app"),
    "hand_written": ("hand-written (aio-pika pool, confirms, SQLite)", "bench.uploads_careful_app"),
}


def start_baseline(name: str, url: str, work_dir: Path, storage: Path, queue: str) -> ServerProcess:
    env = {"AMQP_URL": url, "STORAGE_DIR": str(storage), "BASELINE_QUEUE": queue}
    # uvicorn's defaults, as ``python -m gateway`` uses them (uvloop, httptools, access log).
    argv = [
        sys.executable,
        "-m",
        "uvicorn",
        f"{BASELINES[name][1]}:app",
        "--host",
        "127.0.0.1",
        "--port",
        "{port}",
        "--timeout-graceful-shutdown",
        "5",
    ]
    return ServerProcess(BASELINES[name][0], argv, env, work_dir / f"{name}.log")


async def run_side(server: ServerProcess, load: Load, broker_pid: int | None) -> Result:
    await server.wait_ready()
    return await measure(server, load, broker_pid)


async def delete_queues(url: str, names: list[str]) -> None:
    """Delete the queues this run created (a shared broker must not keep our backlog)."""
    connection = await aio_pika.connect(url)
    try:
        for name in names:
            channel = await connection.channel()
            raw = await channel.get_underlay_channel()
            # One channel per delete: deleting a queue that was never declared
            # (a side that failed early) closes the channel with 404.
            try:
                await raw.queue_delete(name)
            except aio_pika.exceptions.ChannelClosed:
                pass
            if not channel.is_closed:
                await channel.close()
    finally:
        await connection.close()


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="measured time per side (default 10)"
    )
    parser.add_argument(
        "--warmup", type=float, default=1.0, help="warm-up time per side (default 1)"
    )
    parser.add_argument(
        "--concurrency", type=int, default=16, help="concurrent client loops (default 16)"
    )
    parser.add_argument(
        "--max-requests",
        type=int,
        default=20_000,
        help="cap on measured requests per side, each leaving ~100 KB in storage\n(default 20000)",
    )
    parser.add_argument(
        "--storage-root",
        metavar="DIR",
        help="where both servers store uploads (default: the system temp dir); e.g.\n"
        "/dev/shm to keep the filesystem out of the comparison",
    )
    tiny = {"seconds": 1.0, "warmup": 0.2, "concurrency": 2, "max_requests": 200}
    args = parse_args(parser, tiny)
    if args.seconds <= 0 or args.warmup < 0 or args.concurrency < 1 or args.max_requests < 1:
        parser.error("--seconds, --concurrency, --max-requests must be positive, --warmup >= 0")
    return args


def bench_side(name: str, server: ServerProcess, load: Load, broker_pid: int | None) -> Result:
    """Measure one side; the server is stopped whatever happens, its log shown on trouble."""
    try:
        result = run(run_side(server, load, broker_pid))
    except BaseException:
        print(f"--- {name} failed; last lines of its log ---\n{server.log_tail()}\n---")
        raise
    finally:
        exit_code = server.stop()
    report(name, result)
    report_server_trouble(server, result, exit_code)
    return result


def main() -> int:
    args = parse()
    image, quality = make_jpeg()
    body, headers = multipart_body(image)
    # The gateway wants a signed Bearer token; the seed-style app gets the same
    # header and ignores it, so both sides receive the same bytes.
    secret_key = secrets.token_urlsafe(48)
    headers["authorization"] = f"Bearer {mint(secret_key, 'bench', ttl_s=TOKEN_TTL_S)}"
    print_header(args, image, quality, body)
    load = Load(body, headers, args.concurrency, args.seconds, args.warmup, args.max_requests)

    # Unique names: a shared broker may hold other runs' queues.
    run_id = uuid.uuid4().hex[:8]
    kind = f"bench.{run_id}.thumbnail"
    queues = {name: f"bench.{run_id}.{name}-uploads" for name in BASELINES}
    results: dict[str, Result] = {}
    with (
        broker("bench-uploads-") as (url, broker_pid, work),
        tempfile.TemporaryDirectory(prefix="bench-uploads-", dir=args.storage_root) as storage,
    ):
        try:
            for name in BASELINES:
                (work / name).mkdir()
                results[name] = bench_side(
                    BASELINES[name][0],
                    start_baseline(name, url, work / name, Path(storage) / name, queues[name]),
                    load,
                    broker_pid,
                )
            (work / "gateway").mkdir()
            ours = bench_side(
                "taskgate gateway",
                start_gateway(url, work / "gateway", Path(storage) / "gateway", kind, secret_key),
                load,
                broker_pid,
            )
        finally:
            run(delete_queues(url, [*queues.values(), task_queue(kind), dead_queue(kind)]))

    seed, careful = results["seed_style"], results["hand_written"]
    print(
        f"\nratio 202s/s taskgate / seed-style: {ratio(ours.per_s, seed.per_s):.1f}x "
        "(target >= 10x); "
        f"taskgate / hand-written: {ratio(ours.per_s, careful.per_s):.2f}x (target >= 1x)"
    )
    return check_measured(
        {
            "seed_style.202s": seed.accepted,
            "hand_written.202s": careful.accepted,
            "taskgate.202s": ours.accepted,
        }
    )


if __name__ == "__main__":
    sys.exit(main())
