"""What a task handler gets besides its payload."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, TypeVar

from infra.storage import Storage
from rpc.errors import BrokerUnavailable

from .cancellation import Cancellation
from .errors import TaskCancelled
from .messages import StatusEvent, new_event
from .pool import TaskPool
from .settings import WorkerSettings
from .status import confirmed, forget
from .storage import local_input, local_outputs, task_dir
from .throttle import ProgressThrottle

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
        storage: Storage,
        publish: Callable[[StatusEvent], Awaitable[None]],
        publish_soon: Callable[[StatusEvent], asyncio.Future[bool]],
        pool: Callable[[], TaskPool],
        cancellation: Cancellation | None = None,
    ) -> None:
        self.task_id = task_id
        self.kind = kind
        # 1-based; counts retries through the delay tiers, not broker redeliveries.
        self.attempt = attempt
        # True when the broker delivers this attempt again (a worker died holding it).
        self.redelivered = redelivered
        self.settings = settings
        # Uploads and outputs (infra/storage.py): the local directory or S3.
        self.storage = storage
        self._publish = publish
        self._publish_soon = publish_soon
        self._pool = pool
        self.cancellation = cancellation or Cancellation()

    @property
    def cancelled(self) -> bool:
        """The task was cancelled: stop soon (it is stopped for good after a grace period)."""
        return self.cancellation.requested

    @property
    def storage_dir(self) -> Path:
        return self.settings.storage_dir

    def output_dir(self, *, create: bool = True) -> Path:
        """``STORAGE_DIR/<task_id>/``; outputs there keep their names across attempts.

        With the local store only; ``local_outputs`` works with any store.
        ``create=False`` leaves creating it to the code that writes there (a pool
        process): a new directory can cost the loop half a millisecond of disk.
        """
        if not create:
            return self.settings.storage_dir / self.task_id
        return task_dir(self.settings.storage_dir, self.task_id)

    def local_input(self, name: str) -> contextlib.AbstractAsyncContextManager[Path]:
        """``async with``: the stored file ``name`` (``<task_id>/<file>``) as a local file."""
        return local_input(self.storage, self.settings.storage_dir, name)

    def local_outputs(self) -> contextlib.AbstractAsyncContextManager[Path]:
        """``async with``: a local directory whose files become the task's stored outputs.

        Outputs keep their names across attempts; they are stored when the block
        ends without an error. The directory may not exist yet: create it.
        """
        return local_outputs(self.storage, self.task_id)

    async def progress(self, percent: float, message: str = "") -> None:
        """Publish a ``progress`` event; returns once the broker has it.

        Raises TaskCancelled instead once the task is cancelled.
        """
        if self.cancelled:
            raise TaskCancelled("the task was cancelled")
        await self._publish(self._progress_event(percent, message))

    async def run_in_process(self, fn: Callable[..., T], *args: Any) -> T:
        """Run the picklable ``fn(*args)`` in the worker's process pool (CPU-bound work).

        ``fn`` may call :func:`workers.report_progress`: its reports become
        ``progress`` events of this task, confirmed before this returns; at most
        one per ``settings.progress_interval_s``, the latest of each interval, so
        a job shorter than the interval publishes none (see ProgressThrottle).
        Once the task is cancelled ``report_progress`` raises TaskCancelled in the job, and
        after the grace period its process is killed: this raises TaskCancelled.
        """
        confirms: list[asyncio.Future[bool]] = []
        lost: list[BrokerUnavailable] = []

        def on_progress(percent: float, message: str) -> None:
            try:
                confirms.append(self._publish_soon(self._progress_event(percent, message)))
            except BrokerUnavailable as exc:
                lost.append(exc)  # raised below, once the job is done

        throttle = ProgressThrottle(
            on_progress, self.settings.progress_interval_s, asyncio.get_running_loop()
        )
        try:
            result = await self._pool().run(
                fn, *args, on_progress=throttle, cancellation=self.cancellation
            )
            throttle.close()
            for future in confirms:
                await confirmed(future)
        except BaseException as exc:
            # Nobody waits for the other confirms now; a lost channel fails them all.
            for future in confirms:
                forget(future)
            if isinstance(exc, BrokenProcessPool) and self.cancellation.forced:
                raise TaskCancelled("the task was cancelled; its pool process killed") from None
            raise
        finally:
            throttle.close()
        if lost:
            raise lost[0]
        return result

    def _progress_event(self, percent: float, message: str) -> StatusEvent:
        return new_event(
            self.kind,
            self.task_id,
            "progress",
            self.attempt,
            percent=min(100.0, max(0.0, float(percent))),
            message=message or None,
        )
