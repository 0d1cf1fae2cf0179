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

Targets for one process: 20,000 streams held; p99 < 100 ms at 1,000 events/s
spread over 5,000 subscribers; < 20 KB per idle stream.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import errno
import itertools
import math
import os
import random
import resource
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

THIS_FILE = Path(__file__).resolve()
BENCH_DIR = THIS_FILE.parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(REPO))

import msgspec  # noqa: E402
import uvloop  # noqa: E402

TARGET_STREAMS = 20_000
TARGET_P99_MS = 100.0
TARGET_KB_PER_STREAM = 20.0
# One word, so the baseline's "*.<task_id>.*" binding matches "<kind>.<task_id>.<state>".
KIND = "bench"
# Streams one client process and one source address take on by default: well under
# the open-files limit (20,000 here) and the ~28,000 ephemeral ports of one address.
STREAMS_PER_CLIENT_PROC = 10_000
STREAMS_PER_SOURCE_ADDRESS = 10_000
# Linux: let connect() pick the port per destination, not bind() per address.
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
PR_SET_PDEATHSIG = 1
# Open files a process may hold, if the system lets us raise the limit that far (fs.nr_open).
WANTED_NOFILE = 1_048_576
# Control messages to client processes are JSON lines; latency lists make long ones.
CONTROL_LINE_LIMIT = 1 << 28
CONTROL_TIMEOUT_S = 60.0
SERVER_READY_TIMEOUT_S = 60.0
# The baseline closes a channel per stream on shutdown: allow for it.
SERVER_STOP_TIMEOUT_S = 20.0
SERVER_STOP_S_PER_1000_STREAMS = 2.0
CONFIRM_TIMEOUT_S = 30.0
# Publishing: a tick every 5 ms keeps bursts small (5 events at 1,000/s).
TICK_S = 0.005
MAX_UNCONFIRMED = 10_000
# Time for allocations and the first store reads to settle before RSS is read.
SETTLE_S = 1.0
# Streams end when their token expires; this outlasts any run.
TOKEN_TTL_S = 6 * 3600.0
# gateway.settings.GatewaySettings.sse_max_per_user
DEFAULT_SSE_MAX_PER_USER = 16


# --- /proc ------------------------------------------------------------------------------


def rss_kb(pid: int | None) -> int | None:
    """Resident set size of ``pid`` in KiB (VmRSS), or None if it cannot be read."""
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def cpu_ticks(pid: int) -> int:
    """User + system CPU ticks of ``pid`` (all its threads); 0 if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])


def machine_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine, all cores."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def nofile_limit(pid: int) -> int | None:
    """The soft open-files limit of ``pid``."""
    try:
        for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                return int(line.split()[3])
    except (OSError, ValueError):
        pass
    return None


def raise_nofile_limit() -> int:
    """Raise the open-files limit as far as allowed (children inherit it); the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # Raising the hard limit needs CAP_SYS_RESOURCE; without it the hard limit is the ceiling.
    for wanted in (WANTED_NOFILE, hard):
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            return wanted
    return soft


def die_with_parent() -> None:
    """In a child before exec: SIGTERM when the bench dies, so nothing outlives it."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class CpuMeter:
    """CPU used by named processes between ``start`` and ``stop``, in % of one core."""

    def __init__(self, pids: dict[str, list[int]]) -> None:
        self._pids = pids
        self._clock = os.sysconf("SC_CLK_TCK")

    def start(self) -> None:
        self._began = time.monotonic()
        self._ticks = {name: sum(map(cpu_ticks, pids)) for name, pids in self._pids.items()}
        self._own = sum(os.times()[:2])
        self._machine = machine_ticks()

    def stop(self) -> dict[str, float]:
        seconds = max(time.monotonic() - self._began, 1e-9)
        shares = {
            name: 100 * (sum(map(cpu_ticks, pids)) - self._ticks[name]) / self._clock / seconds
            for name, pids in self._pids.items()
        }
        shares["publisher"] = 100 * (sum(os.times()[:2]) - self._own) / seconds
        busy, total = machine_ticks()
        busy_share = (busy - self._machine[0]) / max(total - self._machine[1], 1)
        shares["machine"] = 100 * busy_share
        # Whatever else ran on the machine meanwhile: it competed for the same cores.
        ours = sum(shares[name] for name in (*self._pids, "publisher"))
        shares["others"] = max(0.0, shares["machine"] * (os.cpu_count() or 1) - ours)
        return shares


# --- the client processes ---------------------------------------------------------------


class Probe(msgspec.Struct):
    """The two fields of a status event the clients look at."""

    state: str = ""
    timestamp: float = 0.0


probe_decoder = msgspec.json.Decoder(Probe)


class Receipts:
    """What the streams of one client process received."""

    def __init__(self) -> None:
        self.latencies_s: list[float] = []
        self.delivered = 0
        self.undecodable = 0
        self.last_at = 0.0

    def record(self, data: bytes, now: float) -> None:
        try:
            probe = probe_decoder.decode(data)
        except msgspec.DecodeError:
            self.undecodable += 1
            return
        # The gateway replays each task's ``queued`` event on connect: not part of the run.
        if probe.state == "progress":
            self.delivered += 1
            self.latencies_s.append(now - probe.timestamp)
            self.last_at = now


class NotOk(Exception):
    """The server answered with something other than 200."""


class SseStream(asyncio.Protocol):
    """One SSE subscriber: sends the request, checks for 200, timestamps each ``data:`` line.

    uvicorn sends the body chunked; the chunk-size lines never contain ``data: ``
    or ``retry:``, so the raw bytes are scanned line by line without decoding.
    """

    def __init__(self, request: bytes, receipts: Receipts, ready: asyncio.Future[None]) -> None:
        self._request = request
        self._receipts = receipts
        self.ready = ready
        self.transport: asyncio.Transport | None = None
        self.status = 0
        self.open = False
        self._pending = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self.transport = cast(asyncio.Transport, transport)
        self.open = True
        self.transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        now = time.time()
        buffer = self._pending + data if self._pending else data
        end = buffer.rfind(b"\n") + 1
        self._pending = buffer[end:]
        lines = buffer[:end]
        if not lines:
            return
        if not self.status and not self._read_status(lines):
            return
        # Both servers' first frame is "retry: ...": the stream is subscribed by then.
        if not self.ready.done() and b"retry:" in lines:
            self.ready.set_result(None)
        start = lines.find(b"data: ")
        while start >= 0:
            stop = lines.index(b"\n", start)
            self._receipts.record(lines[start + 6 : stop], now)
            start = lines.find(b"data: ", stop)

    def _read_status(self, lines: bytes) -> bool:
        try:
            self.status = int(lines[9:12])
        except ValueError:
            self.status = -1
        if self.status == 200:
            return True
        if not self.ready.done():
            self.ready.set_exception(NotOk(f"status {self.status}"))
        self.close()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("closed before the first frame"))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    @property
    def held(self) -> bool:
        """Open, answered 200 and got its first frame."""
        ready = self.ready
        return self.open and ready.done() and not ready.cancelled() and ready.exception() is None


def sse_request(host: str, port: int, task_id: str, token: str) -> bytes:
    """What an API client sends; the baseline ignores the token (the tutorial has no auth)."""
    return (
        f"GET /tasks/{task_id}/events HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Accept: text/event-stream\r\nAuthorization: Bearer {token}\r\n\r\n"
    ).encode()


def failure_reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno in errno.errorcode:
        return f"{type(exc).__name__} {errno.errorcode[exc.errno]}"
    return str(exc) if isinstance(exc, NotOk | ConnectionError) else type(exc).__name__


def bound_socket(source: str) -> socket.socket:
    """A non-blocking TCP socket bound to ``source``; the port is chosen at connect time."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        sock.bind((source, 0))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class ClientWorker:
    """The streams of one client process, driven by JSON-line commands on stdin."""

    def __init__(self) -> None:
        self.receipts = Receipts()
        self.streams: dict[int, SseStream] = {}

    async def handle(self, command: dict[str, Any]) -> dict[str, Any]:
        op = command["op"]
        if op == "open":
            return await self.open(**command["args"])
        if op == "held":
            return self.held()
        if op == "delivered":
            return {"delivered": self.receipts.delivered}
        if op == "stats":
            return self.stats()
        if op == "close":
            return self.close_all()
        raise ValueError(f"unknown op {op!r}")

    async def open(
        self,
        *,
        host: str,
        port: int,
        first_index: int,
        tasks: list[str],
        tokens: list[str],
        sources: list[str],
        concurrency: int,
        deadline_s: float,
        stall_s: float,
    ) -> dict[str, Any]:
        """Open a stream per entry of ``tasks`` (with that entry of ``tokens``); wait until each
        got its first frame or failed.

        Gives up on the rest at ``deadline_s`` or after ``stall_s`` without a new stream
        ready (a server at its open-files limit stops accepting rather than refusing).
        """
        began = time.monotonic()
        gate = asyncio.Semaphore(concurrency)
        failures: Counter[str] = Counter()
        progress = [time.monotonic()]

        async def open_one(index: int, task_id: str, token: str) -> None:
            async with gate:
                source = sources[index % len(sources)]
                request = sse_request(host, port, task_id, token)
                reason = await self._open_stream(index, host, port, source, request)
            if reason is None:
                progress[0] = time.monotonic()
            else:
                failures[reason] += 1

        jobs = {
            asyncio.ensure_future(open_one(first_index + k, task_id, token))
            for k, (task_id, token) in enumerate(zip(tasks, tokens, strict=True))
        }
        gave_up = await _wait_with_stall(jobs, began + deadline_s, progress, stall_s)
        if gave_up:
            failures[gave_up] += sum(1 for job in jobs if job.cancelled())
        ready = sum(1 for stream in self.streams.values() if stream.held)
        return {"ready": ready, "failures": dict(failures), "seconds": time.monotonic() - began}

    async def _open_stream(
        self, index: int, host: str, port: int, source: str, request: bytes
    ) -> str | None:
        """Connect and wait for the first frame; None on success, else why it failed."""
        loop = asyncio.get_running_loop()
        stream = SseStream(request, self.receipts, loop.create_future())
        try:
            sock = bound_socket(source)
            try:
                await loop.sock_connect(sock, (host, port))
                await loop.create_connection(lambda: stream, sock=sock)
            except BaseException:
                sock.close()
                raise
            self.streams[index] = stream
            await stream.ready
            return None
        except asyncio.CancelledError:
            stream.close()
            self.streams.pop(index, None)
            raise
        except Exception as exc:
            stream.close()
            self.streams.pop(index, None)
            return failure_reason(exc)

    def held(self) -> dict[str, Any]:
        return {"held_indices": self._held_indices()}

    def _held_indices(self) -> list[int]:
        return [index for index, stream in self.streams.items() if stream.held]

    def stats(self) -> dict[str, Any]:
        receipts = self.receipts
        return {
            "delivered": receipts.delivered,
            "undecodable": receipts.undecodable,
            "last_at": receipts.last_at,
            "latencies_s": receipts.latencies_s,
        }

    def close_all(self) -> dict[str, Any]:
        for stream in self.streams.values():
            stream.close()
        return {"closed": len(self.streams)}


async def _wait_with_stall(
    jobs: set[asyncio.Future[None]], deadline: float, progress: list[float], stall_s: float
) -> str | None:
    """Wait for ``jobs``; cancel the rest at ``deadline`` or after ``stall_s`` without progress."""
    pending = jobs
    while pending:
        _, pending = await asyncio.wait(pending, timeout=0.5)
        now = time.monotonic()
        reason = None
        if now > deadline:
            reason = "gave up: open deadline passed"
        elif now - progress[0] > stall_s:
            reason = f"gave up: no stream ready for {stall_s:g} s"
        if pending and reason:
            for job in pending:
                job.cancel()
            await asyncio.wait(pending, timeout=10)
            return reason
    return None


async def run_client_worker() -> None:
    """A client process: commands on stdin, one JSON reply per line on stdout, EOF ends it."""
    raise_nofile_limit()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=CONTROL_LINE_LIMIT)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    worker = ClientWorker()
    try:
        while line := await reader.readline():
            command = msgspec.json.decode(line)
            reply = await worker.handle(command)
            sys.stdout.buffer.write(msgspec.json.encode(reply) + b"\n")
            sys.stdout.buffer.flush()
            if command["op"] == "close":
                # Let the FINs go out before the process ends.
                await asyncio.sleep(0.5)
                break
    finally:
        worker.close_all()


class ClientProc:
    """The bench's handle on one client process."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self._lock = asyncio.Lock()

    @classmethod
    async def spawn(cls) -> ClientProc:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(THIS_FILE),
            "--client-worker",
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            limit=CONTROL_LINE_LIMIT,
            # Ctrl-C reaches only the bench, which then closes the clients in order.
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        return cls(proc)

    async def call(
        self, op: str, timeout_s: float = CONTROL_TIMEOUT_S, **args: Any
    ) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        async with self._lock:
            self.proc.stdin.write(msgspec.json.encode({"op": op, "args": args}) + b"\n")
            await self.proc.stdin.drain()
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout_s)
        if not line:
            raise RuntimeError(f"client process {self.proc.pid} exited")
        return msgspec.json.decode(line)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.call("close", timeout_s=30)
        with contextlib.suppress(Exception):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        with contextlib.suppress(TimeoutError):
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            finally:
                # Timed out or cancelled (a second Ctrl-C): it must not outlive the bench.
                if self.proc.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        self.proc.kill()


@dataclass
class OpenOutcome:
    requested: int
    ready: int
    seconds: float
    failures: Counter[str]


class ClientFleet:
    """Several client processes sharing the streams: process k gets a contiguous range."""

    def __init__(self, procs: list[ClientProc]) -> None:
        self.procs = procs

    @classmethod
    async def spawn(cls, count: int) -> ClientFleet:
        fleet = cls([])
        try:
            for _ in range(count):
                fleet.procs.append(await ClientProc.spawn())
        except BaseException:
            await fleet.close()
            raise
        return fleet

    @property
    def pids(self) -> list[int]:
        return [client.proc.pid for client in self.procs]

    async def open(
        self,
        port: int,
        streams: tuple[list[str], list[str]],
        sources: list[str],
        args: argparse.Namespace,
    ) -> OpenOutcome:
        """Open ``streams`` (task ids, tokens), shared out between the client processes."""
        tasks, tokens = streams
        ranges = split_evenly(len(tasks), len(self.procs))
        replies = await asyncio.gather(
            *(
                client.call(
                    "open",
                    timeout_s=args.connect_timeout + 30,
                    host="127.0.0.1",
                    port=port,
                    first_index=lo,
                    tasks=tasks[lo:hi],
                    tokens=tokens[lo:hi],
                    sources=sources,
                    concurrency=args.connect_concurrency,
                    deadline_s=args.connect_timeout,
                    stall_s=args.stall_seconds,
                )
                for client, (lo, hi) in zip(self.procs, ranges, strict=True)
            )
        )
        failures: Counter[str] = Counter()
        for reply in replies:
            failures.update(reply["failures"])
        return OpenOutcome(
            requested=len(tasks),
            ready=sum(reply["ready"] for reply in replies),
            seconds=max(reply["seconds"] for reply in replies),
            failures=failures,
        )

    async def held_indices(self) -> list[int]:
        replies = await asyncio.gather(*(client.call("held") for client in self.procs))
        return [index for reply in replies for index in reply["held_indices"]]

    async def delivered(self) -> int:
        replies = await asyncio.gather(*(client.call("delivered") for client in self.procs))
        return sum(reply["delivered"] for reply in replies)

    async def stats(self) -> list[dict[str, Any]]:
        return await asyncio.gather(*(client.call("stats") for client in self.procs))

    async def close(self) -> None:
        await asyncio.gather(*(client.close() for client in self.procs), return_exceptions=True)


def split_evenly(total: int, parts: int) -> list[tuple[int, int]]:
    bounds = [total * k // parts for k in range(parts + 1)]
    return list(itertools.pairwise(bounds))


# --- the servers ------------------------------------------------------------------------


@dataclass
class ServerSpec:
    """How to start one side's server process."""

    name: str
    argv: list[str]
    env: dict[str, str]
    note: str
    # The task store to fill before the server starts (the gateway's), or None.
    database: Path | None = None


def gateway_spec(url: str, port: int, workdir: Path, secret: str, per_user: int) -> ServerSpec:
    env = {
        "AMQP_URL": url,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "DATABASE_PATH": str(workdir / "taskgate.db"),
        "STORAGE_DIR": str(workdir / "storage"),
        "SECRET_KEY": secret,
    }
    note = (
        "python -m gateway: one live queue + status.journal, SQLite store, in-process hub; "
        "each stream a user of its own with a Bearer token, its task owned by that user"
    )
    if per_user > DEFAULT_SSE_MAX_PER_USER:
        # Several streams per task (--tasks < --streams) all come from the task's owner.
        env["SSE_MAX_PER_USER"] = str(per_user)
        note += f"; SSE_MAX_PER_USER={per_user}"
    return ServerSpec(
        name="taskgate",
        argv=[sys.executable, "-m", "gateway"],
        env=env,
        note=note,
        database=Path(env["DATABASE_PATH"]),
    )


def baseline_spec(url: str, port: int, per_connection: int) -> ServerSpec:
    return ServerSpec(
        name="baseline",
        argv=[sys.executable, str(BENCH_DIR / "sse_baseline_app.py")],
        env={
            "AMQP_URL": url,
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "BASELINE_STREAMS_PER_CONNECTION": str(per_connection),
        },
        note=(
            "bench/sse_baseline_app.py: per stream one channel + exclusive auto-delete queue "
            f"bound '*.<task_id>.*'; <= {per_connection:,} channels per AMQP connection "
            "(RabbitMQ's channel_max is 2,047); no auth, no store"
        ),
    )


class ServerProcess:
    """One side's uvicorn process, its output in a log file."""

    def __init__(self, spec: ServerSpec, port: int, log_path: Path) -> None:
        self.spec = spec
        self.port = port
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def launch(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.spec.argv,
                cwd=REPO,
                env={**os.environ, "PYTHONPATH": python_path(), **self.spec.env},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )

    async def wait_ready(self, timeout_s: float = SERVER_READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while await http_status(self.port, "/readyz") != 200:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.spec.name} server exited during start\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{self.spec.name} not ready in {timeout_s:g} s\n{self.log_tail()}"
                )
            await asyncio.sleep(0.2)

    async def stop(self, streams: int) -> int | None:
        """SIGTERM, then SIGKILL if it is still running after a while; the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            timeout_s = SERVER_STOP_TIMEOUT_S + SERVER_STOP_S_PER_1000_STREAMS * streams / 1000
            try:
                await asyncio.to_thread(self.proc.wait, timeout_s)
            except subprocess.TimeoutExpired:
                pass
            finally:
                # Too slow, or the bench is being interrupted: it must not outlive the bench.
                if self.proc.poll() is None:
                    self.proc.kill()
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        self.proc.wait(10)
        return self.proc.returncode

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def python_path() -> str:
    """The repository first, then whatever the caller had on PYTHONPATH."""
    return os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))


async def http_status(
    port: int, path: str, headers: dict[str, str] | None = None, timeout_s: float = 5.0
) -> int | None:
    """Status code of ``GET path`` on 127.0.0.1:port, or None if there was no answer."""
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                request = f"GET {path} HTTP/1.1\r\nHost: x\r\n{extra}Connection: close\r\n\r\n"
                writer.write(request.encode())
                line = await reader.readline()
            finally:
                writer.close()
        return int(line.split()[1])
    except (OSError, TimeoutError, ValueError, IndexError):
        return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- publishing -------------------------------------------------------------------------


class Publisher:
    """Confirmed, persistent status events on one channel, as the workers publish them."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._connection: Any = None
        self._channel: Any = None

    async def open(self) -> None:
        import rpc
        from workers.topology import STATUS_EXCHANGE

        async def declare(channel: Any) -> None:
            # Only the exchange: the journal is the gateway's to declare (see --sides).
            await channel.exchange_declare(STATUS_EXCHANGE, exchange_type="topic", durable=True)

        # The workers' own path: rpc.wire and a robust confirming channel (an aio-pika
        # channel here made every publish fail, and the bench printed a table of zeros).
        self._connection = await rpc.connect_wire(self._url, name="bench-sse-publisher")
        self._channel = await self._connection.open_channel(declare, publisher_confirms=True)

    async def close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()

    def publish(self, task_id: str, state: str, **fields: Any) -> asyncio.Task[None]:
        """Start publishing one event now (timestamped now); the task ends at the confirm."""
        from workers.messages import new_event
        from workers.status import publish_status

        event = new_event(KIND, task_id, state, 1, **fields)  # type: ignore[arg-type]
        return asyncio.ensure_future(publish_status(self._channel, event))


@dataclass
class PublishOutcome:
    published: int = 0
    failed: int = 0
    seconds: float = 0.0
    started_at: float = 0.0  # wall clock, to compare with client receipt times
    per_task: Counter[str] = field(default_factory=Counter)

    @property
    def per_s(self) -> float:
        return self.published / self.seconds if self.seconds else 0.0


async def publish_at_rate(
    publisher: Publisher, task_ids: list[str], rate: float, seconds: float, rng: random.Random
) -> PublishOutcome:
    """``progress`` events to random tasks at ``rate``/s for ``seconds``, paced every TICK_S."""
    outcome = PublishOutcome(started_at=time.time())
    total = round(rate * seconds)
    pending: set[asyncio.Task[None]] = set()

    def confirmed(task: asyncio.Task[None]) -> None:
        pending.discard(task)
        if task.cancelled() or task.exception() is not None:
            outcome.failed += 1

    began = time.monotonic()
    sent = 0
    while sent < total:
        due = min(total, int((time.monotonic() - began) * rate) + 1)
        for n in range(sent, due):
            task_id = rng.choice(task_ids)
            outcome.per_task[task_id] += 1
            task = publisher.publish(
                task_id, "progress", percent=round(100 * n / total, 2), message="bench"
            )
            pending.add(task)
            task.add_done_callback(confirmed)
        sent = due
        if len(pending) > MAX_UNCONFIRMED:
            # The broker is behind: wait for confirms rather than pile up more.
            await asyncio.wait(pending, timeout=CONFIRM_TIMEOUT_S, return_when="FIRST_COMPLETED")
        await asyncio.sleep(TICK_S)
    outcome.seconds = time.monotonic() - began
    if pending:
        await asyncio.wait(pending, timeout=CONFIRM_TIMEOUT_S)
    # Not confirmed in time: cancelled, and counted as failed by ``confirmed``.
    for task in list(pending):
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=5)
    outcome.published = sent - outcome.failed
    return outcome


# --- one side's measurement ------------------------------------------------------------


@dataclass
class SideResult:
    name: str
    note: str
    requested: int = 0
    held_after_open: int | None = None
    held_at_end: int | None = None
    open_seconds: float | None = None
    failures: Counter[str] = field(default_factory=Counter)
    rss_ready_kb: int | None = None
    rss_before_kb: int | None = None
    rss_after_kb: int | None = None
    broker_before_kb: int | None = None
    broker_after_kb: int | None = None
    server_fds: int | None = None
    server_fd_limit: int | None = None
    idle_cpu: dict[str, float] = field(default_factory=dict)
    published: PublishOutcome | None = None
    expected: int = 0
    delivered: int = 0
    undecodable: int = 0
    latencies_s: list[float] = field(default_factory=list)
    last_delivery_at: float = 0.0
    busy_cpu: dict[str, float] = field(default_factory=dict)
    exit_code: int | None = None
    error: str | None = None

    @property
    def at_fd_limit(self) -> bool:
        """Every file the server may open is open: it could not take one more socket."""
        if self.server_fds is None or self.server_fd_limit is None:
            return False
        return self.server_fds >= self.server_fd_limit - 1

    @property
    def kb_per_stream(self) -> float | None:
        return _per_stream(self.rss_before_kb, self.rss_after_kb, self.held_after_open)

    @property
    def broker_kb_per_stream(self) -> float | None:
        return _per_stream(self.broker_before_kb, self.broker_after_kb, self.held_after_open)

    @property
    def deliveries_per_s(self) -> float | None:
        if self.published is None or not self.last_delivery_at:
            return None
        return self.delivered / max(self.last_delivery_at - self.published.started_at, 1e-9)

    def late(self, threshold_s: float) -> int:
        return sum(1 for latency in self.latencies_s if latency > threshold_s)

    def latency_ms(self, q: float) -> float | None:
        if not self.latencies_s:
            return None
        ordered = sorted(self.latencies_s)
        return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _per_stream(before: int | None, after: int | None, streams: int | None) -> float | None:
    if before is None or after is None or not streams:
        return None
    return (after - before) / streams


@dataclass
class Bench:
    """What every side shares: arguments, broker, publisher, the streams' tasks."""

    args: argparse.Namespace
    url: str
    broker_pid: int | None
    publisher: Publisher
    workdir: Path
    task_ids: list[str]
    # The gateway's SECRET_KEY, and a Bearer token for the owner of each task (a user per task).
    secret: str
    tokens: list[str]
    sources_per_side: int

    def streams(self) -> tuple[list[str], list[str]]:
        """(task ids, tokens) of the streams: stream i watches task i % tasks."""
        picks = [i % len(self.task_ids) for i in range(self.args.streams)]
        return [self.task_ids[k] for k in picks], [self.tokens[k] for k in picks]

    @property
    def streams_per_task(self) -> int:
        return math.ceil(self.args.streams / len(self.task_ids))

    def sources(self, side_index: int) -> list[str]:
        # A fresh set of source addresses per side: the previous side's TIME_WAIT ports stay out
        # of the way (a new server port would do too; both are cheap).
        first = 1 + side_index * self.sources_per_side
        return [f"127.0.0.{first + k}" for k in range(self.sources_per_side)]


async def measure_side(bench: Bench, spec: ServerSpec, side_index: int) -> SideResult:
    result = SideResult(spec.name, spec.note, requested=bench.args.streams)
    port = int(spec.env["PORT"])
    server = ServerProcess(spec, port, bench.workdir / f"{spec.name}.log")
    try:
        if spec.database is not None:
            await seed_store(bench, spec.database)
        server.launch()
        await server.wait_ready()
        result.rss_ready_kb = rss_kb(server.pid)
        if spec.database is not None:
            await check_task_visible(bench, server)
        await asyncio.sleep(SETTLE_S)
        result.rss_before_kb = rss_kb(server.pid)
        result.broker_before_kb = rss_kb(bench.broker_pid)
        warn_if_fds_short(server.pid, bench.args.streams)
        fleet = await ClientFleet.spawn(bench.args.client_procs)
        try:
            await hold_streams(bench, server, fleet, result, side_index)
            if not bench.args.hold_only and result.held_after_open:
                await publish_and_collect(bench, server, fleet, result)
        finally:
            await fleet.close()
    except Exception as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        result.exit_code = await server.stop(bench.args.streams)
    return result


async def seed_store(bench: Bench, database: Path) -> None:
    """Each task ``queued`` and owned by its user, recorded with the gateway's own store.

    The gateway streams only tasks the caller owns, and only the gateway sets an owner
    (an upload records its task with the uploader as owner); so the tasks are recorded
    the same way before the gateway starts. Its status feed records the events after.
    """
    from gateway.sqlite_store import SqliteTaskStore
    from workers.messages import encoder, new_event

    store = await SqliteTaskStore.open(database)
    try:
        async with asyncio.timeout(bench.args.setup_timeout):
            for k, task_id in enumerate(bench.task_ids):
                event = new_event(KIND, task_id, "queued", 1)
                await store.record([(event, encoder.encode(event))], owner=owner_of(k))
    finally:
        await store.close()


async def check_task_visible(bench: Bench, server: ServerProcess) -> None:
    """One task answers 200 to its owner's token: the clients' requests are right."""
    status = await http_status(
        server.port, f"/tasks/{bench.task_ids[-1]}", {"Authorization": f"Bearer {bench.tokens[-1]}"}
    )
    if status != 200:
        raise RuntimeError(f"GET /tasks/<id> with the owner's token answered {status}")


def owner_of(task_index: int) -> str:
    return f"bench-user-{task_index:06d}"


def warn_if_fds_short(pid: int, streams: int) -> None:
    limit = nofile_limit(pid)
    if limit is None:
        return
    room = limit - open_fds(pid)
    if streams > room:
        print(
            f"  note: the server may open {limit:,} files and has {open_fds(pid)} open, so it "
            f"can hold at most {room:,} of the {streams:,} streams (one socket each)",
            flush=True,
        )


async def hold_streams(
    bench: Bench, server: ServerProcess, fleet: ClientFleet, result: SideResult, side_index: int
) -> None:
    """Open the streams, let them idle, then read memory and count what is still held."""
    print(f"  {server.spec.name}: opening {bench.args.streams:,} streams ...", flush=True)
    opened = await fleet.open(server.port, bench.streams(), bench.sources(side_index), bench.args)
    result.open_seconds = opened.seconds
    result.failures = opened.failures
    print(
        f"  {server.spec.name}: {opened.ready:,} ready in {opened.seconds:.1f} s"
        + (f" (failed: {dict(opened.failures)})" if opened.failures else "")
        + f"; idle for {bench.args.idle_seconds:g} s",
        flush=True,
    )
    meter = CpuMeter({"server": [server.pid]})
    meter.start()
    await asyncio.sleep(bench.args.idle_seconds)
    result.idle_cpu = meter.stop()
    result.rss_after_kb = rss_kb(server.pid)
    result.broker_after_kb = rss_kb(bench.broker_pid)
    result.server_fds = open_fds(server.pid)
    result.server_fd_limit = nofile_limit(server.pid)
    result.held_after_open = len(await fleet.held_indices())
    print(f"  {server.spec.name}: {result.held_after_open:,} still held", flush=True)


async def publish_and_collect(
    bench: Bench, server: ServerProcess, fleet: ClientFleet, result: SideResult
) -> None:
    """Publish at the rate, wait for the deliveries to drain, then gather the latencies."""
    args = bench.args
    held = Counter(bench.task_ids[i % len(bench.task_ids)] for i in await fleet.held_indices())
    pids = {"server": [server.pid], "clients": fleet.pids}
    if bench.broker_pid is not None:
        pids["broker"] = [bench.broker_pid]
    meter = CpuMeter(pids)
    meter.start()
    print(
        f"  {server.spec.name}: publishing {args.rate:g} events/s for {args.seconds:g} s",
        flush=True,
    )
    rng = random.Random(args.seed)
    result.published = await publish_at_rate(
        bench.publisher, bench.task_ids, args.rate, args.seconds, rng
    )
    result.busy_cpu = meter.stop()
    result.expected = sum(n * held[task] for task, n in result.published.per_task.items())
    deadline = time.monotonic() + args.drain_seconds
    while time.monotonic() < deadline:
        if await fleet.delivered() >= result.expected:
            break
        await asyncio.sleep(0.25)
    for stats in await fleet.stats():
        result.delivered += stats["delivered"]
        result.undecodable += stats["undecodable"]
        result.latencies_s.extend(stats["latencies_s"])
        result.last_delivery_at = max(result.last_delivery_at, stats["last_at"])
    result.held_at_end = len(await fleet.held_indices())


# --- report -----------------------------------------------------------------------------


def fmt(value: float | int | None, spec: str = ",.0f") -> str:
    return "-" if value is None else format(value, spec)


def verdict(ok: bool | None) -> str:
    return "" if ok is None else ("  met" if ok else "  MISSED")


def report(results: list[SideResult], bench: Bench, cli: str, server_limit: int) -> None:
    args = bench.args
    by_name = {r.name: r for r in results}
    columns = [by_name[name] for name in ("taskgate", "baseline") if name in by_name]
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


def _mb(kib: int | None) -> float | None:
    return None if kib is None else kib * 1024 / 1e6


def _kib_to_kb(kib: float | None) -> float | None:
    return None if kib is None else kib * 1.024


# --- main -------------------------------------------------------------------------------


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
        "--sides",
        default="baseline,taskgate",
        help="which servers, in this order (baseline first: the gateway declares the durable "
        "status.journal, which would also collect the baseline's events on the broker)",
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
    parser.add_argument("--client-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
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
) -> tuple[list[SideResult], Bench]:
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
        task_ids=[f"sse{k:06d}{secrets.token_hex(4)}" for k in range(args.tasks)],
        secret=secret,
        tokens=[mint(secret, owner_of(k), ttl_s=TOKEN_TTL_S) for k in range(args.tasks)],
        sources_per_side=args.source_addresses,
    )
    results = []
    try:
        for index, side in enumerate(args.sides):
            if side == "taskgate":
                spec = gateway_spec(
                    url, free_port(), tmp / "gateway", bench.secret, bench.streams_per_task
                )
            else:
                spec = baseline_spec(url, free_port(), args.baseline_streams_per_connection)
            print(f"{side}: starting", flush=True)
            results.append(await measure_side(bench, spec, index))
    finally:
        await publisher.close()
    return results, bench


async def main_async(
    args: argparse.Namespace, url: str, broker_pid: int | None, tmp: Path
) -> tuple[list[SideResult], Bench]:
    # SIGTERM ends the run like Ctrl-C: cancelled, so every finally block closes what it opened.
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await run_bench(args, url, broker_pid, tmp)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.client_worker:
        uvloop.run(run_client_worker())
        return 0
    limit = raise_nofile_limit()
    cli = shlex.join([Path(sys.executable).name, *sys.argv])
    try:
        results, bench = run_with_broker(args)
    except (KeyboardInterrupt, asyncio.CancelledError):
        # Every finally block has run by now: servers, clients and broker stopped, temp dir gone.
        print("interrupted; everything the bench started is stopped", file=sys.stderr)
        return 130
    report(results, bench, cli, limit)
    return 0 if all(r.error is None for r in results) else 1


def run_with_broker(args: argparse.Namespace) -> tuple[list[SideResult], Bench]:
    """The run, on AMQP_URL's broker or on a private node started (and stopped) for it."""
    with tempfile.TemporaryDirectory(prefix="bench-sse-") as tmp_dir:
        tmp = Path(tmp_dir)
        node = None
        url = os.environ.get("AMQP_URL")
        try:
            if url is None:
                from infra.node import BrokerNode, NodeConfig

                node = BrokerNode(NodeConfig.on_free_ports(tmp / "broker"))
                node.start()
                url = node.amqp_url
            return uvloop.run(main_async(args, url, node.pid if node else None, tmp))
        finally:
            if node is not None:
                node.stop()


if __name__ == "__main__":
    sys.exit(main())
