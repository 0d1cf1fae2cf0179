"""What a task handler gets besides its payload."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from pathlib import Path
from typing import Any, TypeVar

from .messages import StatusEvent, new_event
from .settings import WorkerSettings
from .storage import task_dir

T = TypeVar("T")


class TaskContext:
    """One attempt of one task: its identity, progress reporting and the process pool."""

    def __init__(
        self,
        *,
        task_id: str,
        kind: str,
        attempt: int,
        redelivered: bool,
        settings: WorkerSettings,
        publish: Callable[[StatusEvent], Awaitable[None]],
        executor: Callable[[], Executor],
    ) -> None:
        self.task_id = task_id
        self.kind = kind
        # 1-based; counts retries through the delay tiers, not broker redeliveries.
        self.attempt = attempt
        # True when the broker delivers this attempt again (a worker died holding it).
        self.redelivered = redelivered
        self.settings = settings
        self._publish = publish
        self._executor = executor

    @property
    def storage_dir(self) -> Path:
        return self.settings.storage_dir

    def output_dir(self, *, create: bool = True) -> Path:
        """``STORAGE_DIR/<task_id>/``; outputs there keep their names across attempts.

        ``create=False`` leaves creating it to the code that writes there (a pool
        process): a new directory can cost the loop half a millisecond of disk.
        """
        if not create:
            return self.settings.storage_dir / self.task_id
        return task_dir(self.settings.storage_dir, self.task_id)

    async def progress(self, percent: float, message: str = "") -> None:
        """Publish a ``progress`` event; returns once the broker has it."""
        percent = min(100.0, max(0.0, float(percent)))
        await self._publish(
            new_event(
                self.kind,
                self.task_id,
                "progress",
                self.attempt,
                percent=percent,
                message=message or None,
            )
        )

    async def run_in_process(self, fn: Callable[..., T], *args: Any) -> T:
        """Run the picklable ``fn(*args)`` in the worker's process pool (CPU-bound work)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor(), fn, *args)
