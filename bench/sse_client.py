"""The SSE client process of bench/sse.py: holds streams, timestamps each event it receives.

A minimal asyncio HTTP/1.1 reader on uvloop, driven by JSON-line commands on
stdin (one reply per line on stdout, EOF ends it); bench/sse_fleet.py starts
and drives these processes. It imports nothing of the bench, to stay small.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import resource
import socket
import sys
import time
from collections import Counter
from typing import Any, cast

import msgspec
import uvloop

# Linux: let connect() pick the port per destination, not bind() per address.
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
# Open files a process may hold, if the system lets us raise the limit that far (fs.nr_open).
WANTED_NOFILE = 1_048_576
# Control messages to client processes are JSON lines; latency lists make long ones.
CONTROL_LINE_LIMIT = 1 << 28


def raise_nofile_limit() -> int:
    """Raise the open-files limit as far as allowed (children inherit it); the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # Raising the hard limit needs CAP_SYS_RESOURCE; without it the hard limit is the ceiling.
    for wanted in (WANTED_NOFILE, hard):
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            return wanted
    return soft


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
    if isinstance(exc, OSError) and exc.errno is not None and exc.errno in errno.errorcode:
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

        jobs: set[asyncio.Future[None]] = {
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


if __name__ == "__main__":
    uvloop.run(run_client_worker())
