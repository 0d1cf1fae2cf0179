"""Benchmark: 202s/s for a ~100 KB JPEG through POST /uploads, the gateway vs a seed-style app.

Both servers run as one uvicorn process each, on the same broker, in the same
run, and get the same load from this process: N concurrent loops, each with its
own httpx client and connection, posting the same multipart body (and the same
Bearer token, which only the gateway checks) for a fixed time after a short
warm-up. Only 202s count as successes; any other status or transport error is
reported, with the tail of that server's log.

- taskgate: ``python -m gateway`` with its own SQLite store, storage dir and a
  unique upload kind, so its tasks pile up (no worker runs) in their own queue.
- seed-style: bench/uploads_baseline_app.py, which opens a blocking pika
  connection per request inside the async handler (no publisher confirms).

    python bench/uploads.py                      # starts a private broker
    AMQP_URL=amqp://... python bench/uploads.py  # uses that broker
    python bench/uploads.py --seconds 5 --concurrency 32
    python bench/uploads.py --storage-root /dev/shm  # uploads on tmpfs

Target: the gateway's 202s/s >= 10x the seed-style app's. CPU per 202 (from
/proc) is shown for the server, the broker (private broker only) and this
client, to tell where the time goes, and so is the CPU the rest of the machine
used meanwhile: client, servers and broker share the cores, so figures taken
while something else runs are low and noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import io
import os
import platform
import secrets
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# httpcore 1.0.x imports sniffio on every request and falls back to asyncio when
# it is missing; a failed import is not cached, so each request pays a sys.path
# scan (~15 % of this client's CPU here, see encode/httpcore#1103). A None entry
# makes that failed import immediate; it changes nothing else.
if importlib.util.find_spec("sniffio") is None:
    sys.modules["sniffio"] = None  # type: ignore[assignment]

import aio_pika  # noqa: E402
import httpx  # noqa: E402
from PIL import Image  # noqa: E402

from gateway.tokens import mint  # noqa: E402
from infra.node import BrokerNode, NodeConfig  # noqa: E402
from infra.ports import free_port  # noqa: E402
from workers.topology import dead_queue, task_queue  # noqa: E402

IMAGE_SIZE = (600, 450)
TARGET_IMAGE_BYTES = 100_000
READY_TIMEOUT_S = 30.0
# Generous: a request slower than this is a failure worth reporting, not a latency.
REQUEST_TIMEOUT_S = 30.0
LOG_TAIL_LINES = 30
# The bench user's access token outlives any run.
TOKEN_TTL_S = 3600
# CPU used by processes not in the benchmark above which its figures are not trustworthy.
BUSY_MACHINE_CORES = 0.2


# --- the image and the request body ----------------------------------------------------


def make_jpeg(target_bytes: int = TARGET_IMAGE_BYTES) -> tuple[bytes, int]:
    """A noisy 600x450 photo-like JPEG whose quality is picked to land nearest ``target_bytes``.

    Noise keeps JPEG from compressing it to nothing; the gradient keeps Pillow's
    probe and the sniffer looking at a plausible photo. Returns (bytes, quality).
    """
    gradient = Image.linear_gradient("L").resize(IMAGE_SIZE)
    channels = [Image.effect_noise(IMAGE_SIZE, sigma) for sigma in (40, 48, 56)]
    noise = Image.merge("RGB", channels)
    image = Image.blend(Image.merge("RGB", [gradient] * 3), noise, 0.5)

    def encode(quality: int) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=quality)
        return buffer.getvalue()

    # Size grows with quality: bisect for the last quality at or under the target,
    # then keep whichever neighbour is closer.
    low, high = 1, 95
    while low < high:
        middle = (low + high + 1) // 2
        if len(encode(middle)) <= target_bytes:
            low = middle
        else:
            high = middle - 1
    candidates = [(q, encode(q)) for q in {low, min(low + 1, 95)}]
    quality, data = min(candidates, key=lambda c: abs(len(c[1]) - target_bytes))
    return data, quality


def multipart_body(image: bytes) -> tuple[bytes, dict[str, str]]:
    """The exact body httpx would send for ``files={"file": ...}``, encoded once.

    Sending pre-encoded bytes keeps the client's CPU per request low (it shares
    the cores with the server and the broker) without changing the bytes on the wire.
    """
    request = httpx.Request(
        "POST", "http://bench/uploads", files={"file": ("photo.jpg", image, "image/jpeg")}
    )
    return request.read(), {"content-type": request.headers["content-type"]}


# --- server processes ----------------------------------------------------------------


class ServerProcess:
    """A uvicorn server of ours on a free loopback port, its output in a log file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        env = {**os.environ, "PYTHONPATH": str(REPO), "HOST": "127.0.0.1", **env}
        env["PORT"] = str(self.port)
        argv = [arg.replace("{port}", str(self.port)) for arg in argv]
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(
                argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    async def wait_ready(self) -> None:
        """Until GET /readyz answers 200; RuntimeError if it exits or takes too long."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        async with httpx.AsyncClient(base_url=self.base_url, timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"{self.name} exited with {self.process.returncode}")
                try:
                    if (await client.get("/readyz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass  # not listening yet
                await asyncio.sleep(0.05)
        raise RuntimeError(f"{self.name} not ready within {READY_TIMEOUT_S:g} s")

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL if it does not exit within 15 s; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def start_gateway(
    url: str, work_dir: Path, storage: Path, kind: str, secret_key: str
) -> ServerProcess:
    env = {
        "AMQP_URL": url,
        "SECRET_KEY": secret_key,
        "DATABASE_PATH": str(work_dir / "taskgate.db"),
        "STORAGE_DIR": str(storage),
        "UPLOAD_KIND": kind,
    }
    argv = [sys.executable, "-m", "gateway"]
    return ServerProcess("taskgate gateway", argv, env, work_dir / "gateway.log")


def start_baseline(url: str, work_dir: Path, storage: Path, queue: str) -> ServerProcess:
    env = {"AMQP_URL": url, "STORAGE_DIR": str(storage), "BASELINE_QUEUE": queue}
    # uvicorn's defaults, as ``python -m gateway`` uses them (uvloop, httptools, access log).
    argv = [
        sys.executable,
        "-m",
        "uvicorn",
        "bench.uploads_baseline_app:app",
        "--host",
        "127.0.0.1",
        "--port",
        "{port}",
        "--timeout-graceful-shutdown",
        "5",
    ]
    return ServerProcess("seed-style app", argv, env, work_dir / "baseline.log")


# --- CPU accounting ------------------------------------------------------------------


def process_cpu_s(pid: int | None) -> float | None:
    """User + system CPU seconds of ``pid`` (all its threads) from /proc; None if unknown."""
    if pid is None:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Fields after the ")" that closes the command name; utime and stime are 14 and 15.
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float:
    times = os.times()
    return times.user + times.system


def machine_busy_s() -> float | None:
    """Busy CPU seconds of the whole machine since boot (first line of /proc/stat)."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(f) for f in stat.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


@dataclass
class CpuWindow:
    """CPU spent over the measured window by the server, the broker, this client, and the rest.

    The rest (other processes, the hypervisor's steal) shares the same cores:
    when it is not near zero the figures are lower and noisier than on an idle machine.
    """

    server_pid: int
    broker_pid: int | None
    start: dict[str, float | None] = field(default_factory=dict)
    spent: dict[str, float | None] = field(default_factory=dict)
    others_cores: float | None = None
    _started_at: float = 0.0
    _machine_at_start: float | None = None

    def _sample(self) -> dict[str, float | None]:
        return {
            "server": process_cpu_s(self.server_pid),
            "broker": process_cpu_s(self.broker_pid),
            "client": own_cpu_s(),
        }

    def begin(self) -> None:
        self.start = self._sample()
        self._machine_at_start = machine_busy_s()
        self._started_at = time.perf_counter()

    def end(self) -> None:
        wall_s = time.perf_counter() - self._started_at
        machine_now = machine_busy_s()
        for name, now in self._sample().items():
            before = self.start.get(name)
            self.spent[name] = None if now is None or before is None else now - before
        if machine_now is not None and self._machine_at_start is not None and wall_s > 0:
            ours = sum(spent for spent in self.spent.values() if spent is not None)
            others = machine_now - self._machine_at_start - ours
            self.others_cores = max(0.0, others) / wall_s


# --- load ----------------------------------------------------------------------------


@dataclass
class Load:
    body: bytes
    headers: dict[str, str]
    concurrency: int
    seconds: float
    warmup_s: float
    max_requests: int


@dataclass
class Result:
    """What one side answered during the measured window."""

    latencies_s: list[float] = field(default_factory=list)  # of the 202s only
    statuses: Counter[int] = field(default_factory=Counter)  # every status but 202
    failures: Counter[str] = field(default_factory=Counter)  # transport errors, by type
    sample_error: str | None = None
    seconds: float = 0.0
    cpu_s: dict[str, float | None] = field(default_factory=dict)
    others_cores: float | None = None

    @property
    def accepted(self) -> int:
        return len(self.latencies_s)

    @property
    def attempts(self) -> int:
        return self.accepted + self.statuses.total() + self.failures.total()

    @property
    def per_s(self) -> float:
        return self.accepted / self.seconds if self.seconds else 0.0

    def pct_ms(self, q: float) -> float:
        if not self.latencies_s:
            return float("nan")
        ordered = sorted(self.latencies_s)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    def errors_text(self) -> str:
        parts = [f"{count}x HTTP {status}" for status, count in sorted(self.statuses.items())]
        parts += [f"{count}x {name}" for name, count in sorted(self.failures.items())]
        return ", ".join(parts) or "none"

    def cpu_per_202_text(self) -> str:
        if not self.accepted:
            return "n/a"
        parts = [
            f"{name} {spent / self.accepted * 1000:.2f} ms"
            for name, spent in self.cpu_s.items()
            if spent is not None
        ]
        return ", ".join(parts)


def more_to_send(load: Load, deadline: float, result: Result | None) -> bool:
    """Before the deadline and under the request cap (the warm-up, unrecorded, has no cap)."""
    under_cap = result is None or result.attempts < load.max_requests
    return under_cap and time.perf_counter() < deadline


async def post_until(
    client: httpx.AsyncClient, load: Load, deadline: float, result: Result | None
) -> None:
    """One client loop: post sequentially until ``deadline`` (or the request cap)."""
    while more_to_send(load, deadline, result):
        started = time.perf_counter()
        try:
            response = await client.post("/uploads", content=load.body, headers=load.headers)
        except httpx.HTTPError as exc:
            if result is not None:
                result.failures[type(exc).__name__] += 1
                result.sample_error = result.sample_error or repr(exc)
            continue
        if result is None:
            continue
        if response.status_code == 202:
            result.latencies_s.append(time.perf_counter() - started)
        else:
            result.statuses[response.status_code] += 1
            result.sample_error = result.sample_error or (
                f"HTTP {response.status_code}: {response.text[:200]}"
            )


async def measure(server: ServerProcess, load: Load, broker_pid: int | None) -> Result:
    """Warm up, then run ``load.concurrency`` loops for ``load.seconds``; time and CPU them.

    Each loop has its own client and connection: httpcore's pool scans all its
    connections on every request, which at 64 loops on one client made the
    client cost ~5 ms of CPU per request and capped both sides at the same rate.
    """
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                httpx.AsyncClient(
                    base_url=server.base_url,
                    limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
                    timeout=REQUEST_TIMEOUT_S,
                )
            )
            for _ in range(load.concurrency)
        ]
        # Warm-up: connections opened, the gateway's queue declared, caches filled.
        warm_deadline = time.perf_counter() + load.warmup_s
        await asyncio.gather(*(post_until(c, load, warm_deadline, None) for c in clients))
        result = Result()
        cpu = CpuWindow(server.pid, broker_pid)
        cpu.begin()
        started = time.perf_counter()
        deadline = started + load.seconds
        await asyncio.gather(*(post_until(c, load, deadline, result) for c in clients))
        # Requests in flight at the deadline finish after it: the window includes them.
        result.seconds = time.perf_counter() - started
        cpu.end()
        result.cpu_s = cpu.spent
        result.others_cores = cpu.others_cores
    return result


async def run_side(server: ServerProcess, load: Load, broker_pid: int | None) -> Result:
    await server.wait_ready()
    return await measure(server, load, broker_pid)


# --- broker clean-up -----------------------------------------------------------------


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


# --- report --------------------------------------------------------------------------


def rest_of_machine_text(others_cores: float) -> str:
    text = f"rest of the machine: {others_cores:.2f} cores busy"
    if others_cores > BUSY_MACHINE_CORES:
        text += " (not idle: figures are low and noisy)"
    return text


def report(name: str, result: Result) -> None:
    print(
        f"{name:<30} {result.per_s:>8,.1f} 202s/s  p50={result.pct_ms(0.5):8.2f} ms  "
        f"p99={result.pct_ms(0.99):8.2f} ms  ({result.accepted} x 202 in {result.seconds:.1f} s; "
        f"errors: {result.errors_text()})"
    )
    print(f"{'':<30} CPU per 202: {result.cpu_per_202_text()}")
    if result.others_cores is not None:
        print(f"{'':<30} {rest_of_machine_text(result.others_cores)}")
    if result.sample_error:
        print(f"{'':<30} first error: {result.sample_error}")


def report_server_trouble(server: ServerProcess, result: Result, exit_code: int | None) -> None:
    """Show the server's log tail when it refused requests or did not exit cleanly."""
    clean_exits = (0, -signal.SIGTERM)  # plain uvicorn re-raises SIGTERM once done
    if result.statuses or result.failures or exit_code not in clean_exits:
        print(f"--- {server.name} exited with {exit_code}; last lines of its log ---")
        print(server.log_tail())
        print("---")


def print_header(args: argparse.Namespace, image: bytes, quality: int, body: bytes) -> None:
    command = shlex.join(["python", *[os.path.relpath(sys.argv[0], REPO)], *sys.argv[1:]])
    print(f"$ {command}")
    print(f"taskgate at {source_version()}")
    print(
        f"{os.cpu_count()} cores ({platform.machine()}), Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}"
    )
    print(
        f"image: {IMAGE_SIZE[0]}x{IMAGE_SIZE[1]} JPEG quality {quality}, {len(image):,} bytes "
        f"(multipart body {len(body):,} bytes)"
    )
    print(
        f"load: {args.concurrency} concurrent loops, {args.warmup:g} s warm-up + "
        f"{args.seconds:g} s per side, at most {args.max_requests:,} requests per side"
    )
    storage_root = args.storage_root or tempfile.gettempdir()
    print(f"uploads stored under {storage_root} ({filesystem_of(storage_root)})\n")


def source_version() -> str:
    """The commit under test, marked when the working tree has changes (the gateway moves fast)."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
        changes = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "an unknown commit"
    return f"{commit or 'an unknown commit'}{' + uncommitted changes' if changes else ''}"


def filesystem_of(path: str) -> str:
    """Type and device of the mount holding ``path`` (the longest matching mount point)."""
    real = os.path.realpath(path)
    best = ("", "unknown filesystem")
    try:
        with open("/proc/mounts") as mounts:
            for line in mounts:
                device, mount_point, fs_type = line.split()[:3]
                inside = real == mount_point or real.startswith(mount_point.rstrip("/") + "/")
                if inside and len(mount_point) >= len(best[0]):
                    best = (mount_point, f"{fs_type} on {device}")
    except OSError:
        pass
    return best[1]


# --- main ----------------------------------------------------------------------------


def run(coro):
    """uvloop for the client, as for the servers (uvicorn picks it when installed)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def parse_args() -> argparse.Namespace:
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
    args = parser.parse_args()
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
    args = parse_args()
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
    baseline_queue = f"bench.{run_id}.seed-uploads"
    node = None
    url = os.environ.get("AMQP_URL")
    with (
        tempfile.TemporaryDirectory(prefix="bench-uploads-") as tmp,
        tempfile.TemporaryDirectory(prefix="bench-uploads-", dir=args.storage_root) as storage,
    ):
        work = Path(tmp)
        if url is None:
            node = BrokerNode(NodeConfig.on_free_ports(work / "broker"))
            node.start()
            url = node.amqp_url
        broker_pid = node.pid if node is not None else None
        try:
            for side in ("baseline", "gateway"):
                (work / side).mkdir()
            base = bench_side(
                "seed-style (pika per request)",
                start_baseline(url, work / "baseline", Path(storage) / "baseline", baseline_queue),
                load,
                broker_pid,
            )
            ours = bench_side(
                "taskgate gateway",
                start_gateway(url, work / "gateway", Path(storage) / "gateway", kind, secret_key),
                load,
                broker_pid,
            )
        finally:
            try:
                run(delete_queues(url, [baseline_queue, task_queue(kind), dead_queue(kind)]))
            finally:
                if node is not None:
                    node.stop()

    ratio = ours.per_s / base.per_s if base.per_s else float("inf")
    print(f"\nratio 202s/s (taskgate / seed-style): {ratio:.1f}x  (target >= 10x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
