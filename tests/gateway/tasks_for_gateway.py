"""Task kinds for gateway tests, run by a worker process: ``$TASKGATE_TEST_KIND_PREFIX.<name>``."""

from __future__ import annotations

import asyncio
import os

from workers import TaskContext, TaskRegistry
from workers.builtin import ThumbnailRequest, thumbnail

PREFIX = os.environ.get("TASKGATE_TEST_KIND_PREFIX", "gateway-test")
GATE_STEPS = (1, 2, 3)

registry = TaskRegistry()
registry.task(f"{PREFIX}.thumbnail")(thumbnail)


@registry.task(f"{PREFIX}.gated")
async def gated(ctx: TaskContext, request: ThumbnailRequest) -> dict[str, object]:
    """Thumbnails after three progress steps, each released by the test.

    Step ``n`` waits for the file ``gate-<n>`` in the task's directory, so a test
    can hold the task mid-way (to cut a stream, or restart a gateway) and then
    let it go on.
    """
    for step in GATE_STEPS:
        gate = ctx.output_dir() / f"gate-{step}"
        while not gate.exists():  # noqa: ASYNC110 - the test's only signal is a file
            await asyncio.sleep(0.02)
        await ctx.progress(step * 10, f"step {step}")
    return await thumbnail(ctx, request)


@registry.task(f"{PREFIX}.waiting")
async def waiting(ctx: TaskContext, request: ThumbnailRequest) -> dict[str, object]:
    """Wait for the file ``gate-1`` in the task's directory, report progress, return the pid
    of the worker that finished it. No process pool: starting one can stall a loaded
    worker's loop for seconds, longer than a test's short lease."""
    gate = ctx.output_dir() / "gate-1"
    while not gate.exists():  # noqa: ASYNC110 - the test's only signal is a file
        await asyncio.sleep(0.02)
    await ctx.progress(50, "past the gate")
    return {"finished_by_pid": os.getpid()}


@registry.task(f"{PREFIX}.flaky", max_attempts=1)
async def flaky(ctx: TaskContext, request: ThumbnailRequest) -> dict[str, object]:
    """Fails, and so is dead-lettered at once, until the file ``gate-1`` is in the task's
    directory: a replayed dead letter then succeeds."""
    if not (ctx.output_dir() / "gate-1").exists():
        raise RuntimeError("gate-1 is closed")
    return {"passed": True}
