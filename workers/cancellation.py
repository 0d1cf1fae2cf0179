"""How a running task learns of its cancel and is stopped: asked first, forced after a grace.

A worker polls the shared store for the tasks it runs (``CancelWatch``, one
small indexed read per ``TASK_CANCEL_POLL_S`` while any task runs, none while
idle). Why the store and not a broadcast on the broker: the cancel is already
a row there (``workers.task_records``), written in the transaction that
decides it; a poll cannot miss it while a worker reconnects or starts, and it
needs no exchange, queue or binding per worker. It costs up to one poll
interval of latency, which a grace period of seconds dwarfs anyway.

A cancelled attempt (``Cancellation``) is asked to stop first: ``ctx.cancelled``
turns true, ``ctx.progress`` and a pool job's ``report_progress`` raise
``TaskCancelled``. After ``TASK_CANCEL_GRACE_S`` it is forced: the newest force
hook runs (a pool job's: its process is killed and replaced), or else the
handler's asyncio task is cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

from infra.background import cancel_and_wait
from infra.database import Database
from rpc.errors import BrokerUnavailable

from .deliveries import describe
from .errors import TaskCancelled
from .settings import WorkerSettings
from .task_records import cancels_requested
from .task_records import migrate as migrate_task_records

logger = logging.getLogger(__name__)

# Its result is ignored.
Hook = Callable[[], object]
T = TypeVar("T")


class Cancellation:
    """One attempt's cancel: ``request(grace_s)`` asks, the grace's end forces."""

    def __init__(self, kind: str = "") -> None:
        self.kind = kind
        self.started_at = time.time()
        self.requested = False
        self.forced = False
        self._on_request: list[Hook] = []
        self._on_force: list[Hook] = []
        self._timer: asyncio.TimerHandle | None = None

    def request(self, grace_s: float) -> None:
        if self.requested:
            return
        self.requested = True
        for hook in list(self._on_request):
            hook()
        self._timer = asyncio.get_running_loop().call_later(grace_s, self._force)

    def _force(self) -> None:
        self.forced = True
        if self._on_force:
            self._on_force[-1]()

    @contextlib.contextmanager
    def hooks(self, *, on_request: Hook, on_force: Hook) -> Iterator[None]:
        """Within the block, ``on_request`` runs when the cancel is asked (at once if it was)
        and ``on_force`` when it is forced, instead of the hooks of any enclosing block."""
        self._on_request.append(on_request)
        self._on_force.append(on_force)
        try:
            if self.requested:
                on_request()
            yield
        finally:
            self._on_request.remove(on_request)
            self._on_force.remove(on_force)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()


async def cancellable(
    handler: Awaitable[T], cancellation: Cancellation, *, stopping: Callable[[], bool]
) -> T:
    """Await ``handler`` in the current task, which its cancellation's grace end cancels;
    TaskCancelled for any end of a cancelled attempt but a result (no retry for it)."""
    current = asyncio.current_task()
    assert current is not None
    try:
        with cancellation.hooks(on_request=lambda: None, on_force=current.cancel):
            return await handler
    except asyncio.CancelledError:
        if not cancellation.forced or stopping():
            raise
        current.uncancel()
        raise TaskCancelled("the task was cancelled and stopped after its grace") from None
    except Exception as exc:
        if cancellation.requested and not isinstance(exc, (BrokerUnavailable, TaskCancelled)):
            raise TaskCancelled(f"the task was cancelled ({describe(exc)})") from exc
        raise


class CancelWatch:
    """Polls the store for cancels of the tasks ``watch``-ed; ``await close()`` when done."""

    def __init__(self, database: Database, *, poll_s: float, grace_s: float) -> None:
        self._database = database
        self._poll_s = poll_s
        self._grace_s = grace_s
        self._watched: dict[str, Cancellation] = {}
        self._poller: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, database: Database, settings: WorkerSettings) -> CancelWatch:
        """A running watch with the settings' TASK_CANCEL_POLL_S and TASK_CANCEL_GRACE_S."""
        await migrate_task_records(database)
        watch = cls(
            database, poll_s=settings.task_cancel_poll_s, grace_s=settings.task_cancel_grace_s
        )
        watch._poller = asyncio.get_running_loop().create_task(watch._poll(), name="cancel-watch")
        return watch

    @contextlib.contextmanager
    def watch(self, task_id: str, kind: str = "") -> Iterator[Cancellation]:
        """The cancellation of ``task_id`` while it runs here (once per worker at a time)."""
        cancellation = self._watched[task_id] = Cancellation(kind)
        try:
            yield cancellation
        finally:
            cancellation.close()
            self._watched.pop(task_id, None)

    def running(self) -> list[dict[str, object]]:
        """The tasks running here now, oldest first (for the presence heartbeat)."""
        by_start = sorted(self._watched.items(), key=lambda item: item[1].started_at)
        return [{"task_id": t, "kind": c.kind, "since": c.started_at} for t, c in by_start]

    async def asked(self, task_id: str) -> bool:
        """Whether a cancel of ``task_id`` was requested (one read; for a task about to start)."""
        return bool(await self._database.read(lambda tx: cancels_requested(tx, [task_id])))

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._poll_s)
            waiting = sorted(t for t, c in self._watched.items() if not c.requested)
            if not waiting:
                continue
            try:
                found = await self._database.read(
                    lambda tx, ids=waiting: cancels_requested(tx, ids)  # type: ignore[misc]
                )
            except Exception as exc:  # the next poll tries again
                logger.warning("could not read cancel requests: %s", exc)
                continue
            for task_id in found:
                if (cancellation := self._watched.get(task_id)) is not None:
                    logger.info("task %s cancelled; stopping it", task_id)
                    cancellation.request(self._grace_s)

    async def close(self) -> None:
        await cancel_and_wait(self._poller)
        self._poller = None
