"""A client that leaves mid-upload is logged as one info line, not a traceback (issue 16, item 10).

A real gateway process over a raw socket: only a server sees the client go.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from ..helpers import eventually
from .conftest import GatewayProcess, bearer

TIMEOUT_S = 30


async def test_a_client_leaving_mid_upload_is_one_info_line_without_a_traceback(
    gateway_process: Callable[..., GatewayProcess],
):
    process = gateway_process()
    await process.wait_ready()
    token = bearer(process.settings)["Authorization"].encode()
    half = (
        b"POST /uploads HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: " + token + b"\r\n"
        b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 100000\r\n\r\n"
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n'
        b"Content-Type: image/jpeg\r\n\r\n\xff\xd8\xff\xe0" + b"x" * 20_000
    )
    _, writer = await asyncio.open_connection("127.0.0.1", process.port)
    writer.write(half)
    await writer.drain()
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()

    async def logged() -> bool:
        return "client left mid-request" in process.log()

    await eventually(logged, timeout_s=TIMEOUT_S, interval_s=0.05)
    async with process.client() as client:  # the gateway still serves
        assert (await client.get("/healthz")).status_code == 200
    log = process.log()
    lines = [line for line in log.splitlines() if "client left mid-request" in line]
    assert len(lines) == 1
    assert "INFO" in lines[0] and "/uploads" in lines[0]
    assert "Traceback" not in log
