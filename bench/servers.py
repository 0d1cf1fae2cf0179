"""A benchmarked HTTP server: one process on a free loopback port, its output in a log file."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import subprocess
import time
from pathlib import Path

from bench.common import REPO, stop_process
from infra.ports import free_port

PR_SET_PDEATHSIG = 1
READY_TIMEOUT_S = 60.0
LOG_TAIL_LINES = 30


def die_with_parent() -> None:
    """In a child before exec: SIGTERM when the bench dies, so nothing outlives it."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def python_path() -> str:
    """The repository first, then whatever the caller had on PYTHONPATH."""
    return os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))


class ServerProcess:
    """A server of one side, started at once with HOST and PORT (and ``{port}`` in argv) set."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        env = {**os.environ, "PYTHONPATH": python_path(), "HOST": "127.0.0.1", **env}
        env["PORT"] = str(self.port)
        argv = [arg.replace("{port}", str(self.port)) for arg in argv]
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(
                argv,
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Ctrl-C reaches only the bench, which then stops its servers in order.
                start_new_session=True,
                preexec_fn=die_with_parent,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    async def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Until GET /readyz answers 200; RuntimeError (with the log) if it exits or is slow."""
        deadline = time.monotonic() + timeout_s
        while await http_status(self.port, "/readyz") != 200:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.process.returncode} during start\n"
                    f"{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not ready in {timeout_s:g} s\n{self.log_tail()}")
            await asyncio.sleep(0.05)

    def stop(self, timeout_s: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout_s``; the exit code."""
        return stop_process(self.process, timeout_s)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


async def http_status(
    port: int, path: str, headers: dict[str, str] | None = None, timeout_s: float = 5.0
) -> int | None:
    """Status code of ``GET path`` on 127.0.0.1:port, or None if there was no answer."""
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                request = (
                    f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}Connection: close\r\n\r\n"
                )
                writer.write(request.encode())
                line = await reader.readline()
            finally:
                writer.close()
        return int(line.split()[1])
    except (OSError, TimeoutError, ValueError, IndexError):
        return None
