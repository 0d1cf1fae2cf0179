"""RPC servers that tests run as processes: ``python -m rpc tests.rpc.servers:server``."""

from __future__ import annotations

import asyncio
import sys

import msgspec

from rpc import RpcServer


class Echo(msgspec.Struct):
    n: int


class Slow(msgspec.Struct):
    n: int
    seconds: float


server = RpcServer("test-subprocess")


@server.method("proc.echo")
async def echo(request: Echo) -> Echo:
    return request


@server.method("proc.slow")
async def slow(request: Slow) -> Echo:
    # Tells the test the call is in flight, so it can signal the process mid-call.
    print(f"started {request.n}", flush=True)
    sys.stdout.flush()
    await asyncio.sleep(request.seconds)
    return Echo(request.n)
