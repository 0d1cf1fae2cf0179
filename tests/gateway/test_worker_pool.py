"""A worker killed with SIGKILL takes its image process pool with it."""

from __future__ import annotations

import os
from pathlib import Path

from ..helpers import eventually
from .conftest import jpeg_bytes, read_stream, upload


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid``, from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pids: set[int]) -> bool:
    return any(os.path.exists(f"/proc/{pid}") for pid in pids)


async def test_a_killed_worker_leaves_no_pool_process_behind(gateway_process, worker_process):
    worker = worker_process()
    gateway = gateway_process()
    await gateway.wait_ready()
    async with gateway.client() as client:
        task = (await upload(client, jpeg_bytes())).json()
        assert (await read_stream(client, task["events_url"]))[-1].event == "succeeded"
    pool = descendants(worker.process.pid)
    assert pool, "the thumbnail ran in the worker's process pool"

    worker.kill()

    async def all_gone() -> bool:
        return not alive(pool)

    await eventually(all_gone, timeout_s=10, interval_s=0.05)
