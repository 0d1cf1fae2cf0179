"""Task kinds for worker-process tests; kinds are ``$TASKGATE_TEST_KIND_PREFIX.<name>``."""

from __future__ import annotations

import asyncio
import os

import msgspec

from workers import RetryableError, TaskContext, TaskRegistry

PREFIX = os.environ.get("TASKGATE_TEST_KIND_PREFIX", "test")

registry = TaskRegistry()
# The kinds are f"{PREFIX}.{name}" for these names.
TEST_TASK_NAMES = ("block", "slow", "flag", "pooled")


class Slow(msgspec.Struct):
    seconds: float


class Flag(msgspec.Struct):
    flag: str


@registry.task(f"{PREFIX}.block")
async def block(ctx: TaskContext, payload: dict) -> dict:
    """Hang on the first delivery; finish when redelivered (its first worker died)."""
    if not ctx.redelivered:
        await asyncio.Event().wait()
    return {"finished_by_pid": os.getpid()}


@registry.task(f"{PREFIX}.slow")
async def slow(ctx: TaskContext, payload: Slow) -> dict:
    """Work for ``seconds`` (stands for a long task in flight at shutdown)."""
    await ctx.progress(0, "working")
    await asyncio.sleep(payload.seconds)
    return {"worked_s": payload.seconds}


@registry.task(f"{PREFIX}.flag")
async def needs_flag(ctx: TaskContext, payload: Flag) -> dict:
    """Fail retryably until the file ``flag`` exists in the storage."""
    if not (ctx.storage_dir / payload.flag).exists():
        raise RetryableError(f"{payload.flag} is missing")
    return {"flag": payload.flag}


@registry.task(f"{PREFIX}.pooled")
async def pooled(ctx: TaskContext, payload: dict) -> dict:
    """Run a job in the process pool: a fresh worker starts its pool for it."""
    return {"pool_pid": await ctx.run_in_process(os.getpid)}
