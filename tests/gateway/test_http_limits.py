"""What a client may make a real gateway process hold: headers, slow clients, unread bodies.

These talk raw HTTP over sockets to ``python -m gateway``: the limits live in
its server (gateway/http_guard.py, gateway/__main__.py), not in the app.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from ..helpers import eventually
from .conftest import GatewayProcess, bearer

MiB = 1024 * 1024
EMPTY_FORM = {"Content-Type": "multipart/form-data; boundary=b"}


@pytest.fixture
def gateway(
    gateway_process: Callable[..., GatewayProcess], monkeypatch: pytest.MonkeyPatch
) -> Callable[..., GatewayProcess]:
    """``await gateway(HEADER_TIMEOUT_S="1")``: a gateway process answering /healthz, with
    extra settings from the environment."""

    async def start(**env: str) -> GatewayProcess:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        process = gateway_process()
        async with httpx.AsyncClient(base_url=process.url) as client:

            async def up() -> bool:
                try:
                    return (await client.get("/healthz")).status_code == 200
                except httpx.TransportError:
                    return False

            await eventually(up, timeout_s=30, interval_s=0.05)
        return process

    return start  # type: ignore[return-value]


@contextlib.asynccontextmanager
async def connection(
    gateway: GatewayProcess,
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def send_until_refused(writer: asyncio.StreamWriter, chunk: bytes, total: int) -> int:
    """Send ``chunk`` until ``total`` bytes went or the server stopped taking them; bytes sent.

    A server that stops reading either closes (the send fails) or lets the socket
    buffers fill (the send blocks): both end the sending.
    """
    sent = 0
    try:
        while sent < total:
            writer.write(chunk)
            await asyncio.wait_for(writer.drain(), timeout=10)
            sent += len(chunk)
    except (OSError, TimeoutError):
        pass
    return sent


class Answer:
    """What the server sends, read as it arrives: a reset that follows (the server closed
    with our data unread) would otherwise hide what was buffered before it."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.received = bytearray()
        self._task = asyncio.create_task(self._read(reader))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(OSError):
            while chunk := await reader.read(65536):
                self.received += chunk

    @property
    def arrived(self) -> bool:
        return bool(self.received) or self._task.done()

    async def whole(self) -> bytes:
        """Everything, once the server closed."""
        await asyncio.wait_for(self._task, timeout=30)
        return bytes(self.received)


async def read_all(reader: asyncio.StreamReader) -> bytes:
    return await Answer(reader).whole()


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def test_headers_over_the_bound_get_431_and_a_closed_connection(gateway):
    process = await gateway()
    request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n"
    async with connection(process) as (reader, writer):
        writer.write(request)
        answer = await read_all(reader)

    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431 ")
    assert b"connection: close" in head
    assert b'"code":"headers_too_large"' in body


@pytest.mark.parametrize("kind", ["a 16 MiB header line", "100,000 headers"])
async def test_huge_headers_are_cut_off_before_they_arrive(gateway, kind):
    process = await gateway()
    if kind == "a 16 MiB header line":
        start, chunk, total = b"X-Big: ", b"a" * 65536, 16 * MiB
    else:
        start, chunk, total = b"", b"X-N: 1\r\n" * 8192, 100_000 * 8
    async with connection(process) as (reader, writer):
        answer = Answer(reader)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + start)
        sent = await send_until_refused(writer, chunk, total)
        if sent >= total:
            writer.write(b"\r\n\r\n")
        received = await answer.whole()

    if kind == "a 16 MiB header line":
        assert sent < total  # far more than any socket buffer holds: the server stopped reading
    # The 431 may be lost to the reset of a connection closed with data unread; never a 200.
    assert received == b"" or received.startswith(b"HTTP/1.1 431 ")


async def test_connections_holding_unfinished_huge_headers_hold_no_memory(gateway):
    process = await gateway()
    before = rss_bytes(process.process.pid)
    async with contextlib.AsyncExitStack() as held:
        for _ in range(10):
            _, writer = await held.enter_async_context(connection(process))
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
            await send_until_refused(writer, b"a" * 65536, 16 * MiB)
        # All ten still open on this side, none finished its header.
        grown = rss_bytes(process.process.pid) - before

    # Unbounded, ten 16 MiB headers took 200 MB (the audit: 58 -> 263 MB).
    assert grown < 32 * MiB, f"the gateway grew by {grown / MiB:.0f} MiB"


async def test_a_connection_that_sends_nothing_is_closed(gateway):
    process = await gateway(HEADER_TIMEOUT_S="0.5")
    async with connection(process) as (reader, _):
        answer = await read_all(reader)

    assert answer == b""


async def test_headers_at_a_trickle_get_408(gateway):
    process = await gateway(HEADER_TIMEOUT_S="0.5")
    request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"s" * 200 + b"\r\n\r\n"
    async with connection(process) as (reader, writer):
        answer = Answer(reader)
        with contextlib.suppress(OSError):
            for byte in request:
                if answer.arrived:
                    break
                writer.write(bytes([byte]))
                await writer.drain()
                # The slow client: its next byte comes later (this is the behaviour under test).
                await asyncio.sleep(0.05)
        received = await answer.whole()

    assert received.startswith(b"HTTP/1.1 408 "), received[:100]
    assert b'"code":"header_timeout"' in received


async def test_a_body_at_a_trickle_gets_408(gateway):
    process = await gateway(BODY_TIMEOUT_S="0.5")
    token = bearer(process.settings)["Authorization"].encode()
    head = (
        b"POST /rpc/orders.quote HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: " + token + b"\r\n"
        b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    )
    async with connection(process) as (reader, writer):
        answer = Answer(reader)
        writer.write(head)
        with contextlib.suppress(OSError):
            for _ in range(1000):
                if answer.arrived:
                    break
                writer.write(b" ")
                await writer.drain()
                # 20 bytes/s, far under the 240 bytes/s a body must keep up.
                await asyncio.sleep(0.05)
        received = await answer.whole()

    assert received.startswith(b"HTTP/1.1 408 "), received[:100]
    assert b'"code":"body_timeout"' in received


@pytest.mark.parametrize("early", ["413 for a declared 400 MiB body", "401 before any body"])
async def test_an_early_answer_closes_the_connection_and_reads_no_more_body(gateway, early):
    process = await gateway()
    token = bearer(process.settings)["Authorization"].encode()
    if early.startswith("413"):
        head = b"POST /rpc/orders.quote HTTP/1.1\r\nAuthorization: " + token + b"\r\n"
        status = b"413"
    else:
        head = b"POST /uploads HTTP/1.1\r\n"
        status = b"401"
    head += (
        b"Host: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 419430400\r\n\r\n"
    )
    async with connection(process) as (reader, writer):
        writer.write(head)
        answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=30)
        sent = await send_until_refused(writer, b"x" * 65536, 64 * MiB)

    assert answer.startswith(b"HTTP/1.1 " + status + b" ")
    assert b"connection: close" in answer
    # The server neither drains the rest of the body nor keeps the connection.
    assert sent < 64 * MiB


async def test_every_response_says_nosniff(gateway):
    process = await gateway()
    async with process.client() as client:
        answers = [
            await client.get("/healthz"),
            await client.get("/no/such/route"),
            await client.get("/tasks/x", headers={"Authorization": ""}),
        ]
        async with client.stream("GET", "/notifications/stream") as stream:
            answers.append(stream)

    assert [a.status_code for a in answers] == [200, 404, 401, 200]
    assert all(a.headers.get("x-content-type-options") == "nosniff" for a in answers)


async def test_only_allowed_hosts_are_answered(gateway):
    process = await gateway(ALLOWED_HOSTS="127.0.0.1,localhost,*.api.example")
    hosts = (f"127.0.0.1:{process.port}", "LOCALHOST", "eu.api.example", "api.example.evil")
    async with httpx.AsyncClient(base_url=process.url) as client:
        answers = {host: await client.get("/", headers={"Host": host}) for host in hosts}
        # Health probes come by address (an orchestrator's Host is the pod's IP).
        probe = await client.get("/healthz", headers={"Host": "10.1.2.3:8000"})

    assert {host: answer.status_code for host, answer in answers.items()} == {
        f"127.0.0.1:{process.port}": 200,
        "LOCALHOST": 200,
        "eu.api.example": 200,
        "api.example.evil": 400,
    }
    assert answers["api.example.evil"].json()["error"]["code"] == "unknown_host"
    assert probe.status_code == 200


async def test_uploads_one_user_sends_at_once_are_capped(gateway):
    process = await gateway(UPLOADS_PER_USER="2")
    await process.wait_ready()
    token = bearer(process.settings)["Authorization"].encode()
    unfinished = (
        b"POST /uploads HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: " + token + b"\r\n"
        b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 100000\r\n\r\n"
        b'--b\r\nContent-Disposition: form-data; name="watermark"\r\n\r\nx'
    )

    async with process.client() as client:

        async def probe() -> int:
            # An empty form: 422 if admitted (nothing is created), 429 if refused.
            return (await client.post("/uploads", content=b"", headers=EMPTY_FORM)).status_code

        async def refused() -> bool:
            return await probe() == 429

        async with contextlib.AsyncExitStack() as held:
            writers = []
            for _ in range(2):
                _, writer = await held.enter_async_context(connection(process))
                writer.write(unfinished)
                writers.append(writer)
            await eventually(refused, timeout_s=30)
            other_user = await held.enter_async_context(process.client(user="grace"))
            for_another_user = await other_user.post("/uploads", content=b"", headers=EMPTY_FORM)
            refusal = await client.post("/uploads", content=b"", headers=EMPTY_FORM)
            writers[0].close()  # one upload gives up: its slot is free again

            async def admitted() -> bool:
                return await probe() != 429

            await eventually(admitted, timeout_s=30)

    assert refusal.status_code == 429
    assert refusal.headers["retry-after"] == "1"
    assert refusal.json()["error"]["code"] == "too_many_uploads"
    assert for_another_user.status_code == 422
