"""Fixtures for RPC tests: connections, clients and servers on the session's broker."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

import rpc

from ..helpers import eventually  # noqa: F401  (re-exported for tests)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
async def client(connection: rpc.WireConnection) -> AsyncIterator[rpc.RpcClient]:
    async with await rpc.RpcClient.create(connection) as client:
        yield client


@pytest.fixture
async def serve(
    connection: rpc.WireConnection,
) -> AsyncIterator[Callable[[rpc.RpcServer], Awaitable[rpc.RpcServer]]]:
    """Start servers in-process on the test's connection; stopped after the test."""
    started: list[rpc.RpcServer] = []

    async def start(server: rpc.RpcServer) -> rpc.RpcServer:
        await server.start(connection, prefetch=64, concurrency=64)
        started.append(server)
        return server

    yield start
    for server in started:
        await server.stop(grace_s=5)


class ServerProcess:
    """``python -m rpc tests.rpc.servers:server`` as a child process."""

    def __init__(self, amqp_url: str, database_path: Path | None = None) -> None:
        env = {**os.environ, "AMQP_URL": amqp_url, "PYTHONPATH": str(REPO)}
        if database_path is not None:  # its presence heartbeat's store (infra/presence.py)
            env["DATABASE_PATH"] = str(database_path)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "rpc", "tests.rpc.servers:server"],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    async def wait_for_output(self, text: str) -> str:
        """Read the process's output (log included) until a line contains ``text``."""
        assert self.process.stdout is not None
        while line := await asyncio.to_thread(self.process.stdout.readline):
            if text in line:
                return line.strip()
        raise AssertionError(f"the process exited without printing {text!r}")

    def terminate(self) -> None:
        self.process.terminate()

    async def wait(self, timeout_s: float = 30) -> int:
        return await asyncio.to_thread(self.process.wait, timeout_s)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


@pytest.fixture
async def server_process(
    amqp_url: str, tmp_path: Path
) -> AsyncIterator[Callable[[], ServerProcess]]:
    """Factory of RPC server processes on the test's store; each is killed after the test if
    still running."""
    processes: list[ServerProcess] = []

    def start() -> ServerProcess:
        processes.append(ServerProcess(amqp_url, tmp_path / "taskgate.db"))
        return processes[-1]

    yield start
    for process in processes:
        process.kill()
