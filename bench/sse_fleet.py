"""The bench's handle on its SSE client processes (bench/sse_client.py)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from bench.servers import die_with_parent
from bench.sse_client import CONTROL_LINE_LIMIT

CLIENT_SCRIPT = Path(__file__).resolve().parent / "sse_client.py"
CONTROL_TIMEOUT_S = 60.0


class ClientProc:
    """The bench's handle on one client process."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self._lock = asyncio.Lock()

    @classmethod
    async def spawn(cls) -> ClientProc:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(CLIENT_SCRIPT),
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
