"""Command-line tests: ``taskgate`` runs as a real process (``python -m taskgate.cli``)
against the real broker, gateway, worker and rpc processes of the gateway tests' fixtures."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..gateway.conftest import *  # noqa: F403  (gateway, worker and rpc process fixtures)

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "taskgate.cli"]
# What the CLI reads from the environment: a test passes exactly what it means to.
CLI_SETTINGS = ("AMQP_URL", "SECRET_KEY", "RPC_TIMEOUT_S", "RPC_REPLY_MODE")
# A bound for a stuck command, not a timing check: a loaded machine boots a node in minutes.
RUN_TIMEOUT_S = 180


@dataclass(frozen=True)
class CliResult:
    code: int
    stdout: str
    stderr: str


def cli_env(env: Mapping[str, str]) -> dict[str, str]:
    """The test runner's environment without the CLI's settings, plus ``env``."""
    inherited = {
        key: value
        for key, value in os.environ.items()
        if key not in CLI_SETTINGS and not key.startswith("TASKGATE_")
    }
    return {**inherited, "PYTHONPATH": str(REPO), **env}


async def start_cli(*args: str, env: Mapping[str, str]) -> asyncio.subprocess.Process:
    """``taskgate ARGS`` as a child process, its stdout and stderr piped to the test."""
    return await asyncio.create_subprocess_exec(
        *CLI,
        *args,
        cwd=REPO,
        env=cli_env(env),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def finish(process: asyncio.subprocess.Process) -> CliResult:
    """What ``process`` printed and its exit code, once it has exited."""
    try:
        async with asyncio.timeout(RUN_TIMEOUT_S):
            stdout, stderr = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return CliResult(process.returncode, stdout.decode(), stderr.decode())


async def taskgate(*args: str, env: Mapping[str, str] | None = None) -> CliResult:
    """Run ``taskgate ARGS`` to its end."""
    return await finish(await start_cli(*args, env=env or {}))
