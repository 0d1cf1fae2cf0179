"""A worker's task slots: a semaphore that serves high-priority waiters first.

A worker holds up to its prefetch of deliveries from each priority's queue
(the prefetch is per consumer, AMQP's default: a prefetch full of normal work
leaves room for high work), all waiting for one of ``WORKER_CONCURRENCY``
slots. A plain semaphore would start them in arrival order, so a high task
would wait behind the normal ones already prefetched; here a freed slot goes
to the oldest high waiter if there is one, else to the oldest normal one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator

from .topology import PRIORITIES, Priority


class PrioritySlots:
    """``async with slots.take(priority):`` runs the body holding one of ``size`` slots."""

    def __init__(self, size: int) -> None:
        self._free = size
        self._waiters: dict[Priority, deque[asyncio.Future[None]]] = {
            priority: deque() for priority in PRIORITIES
        }

    @contextlib.asynccontextmanager
    async def take(self, priority: Priority) -> AsyncIterator[None]:
        await self._acquire(priority)
        try:
            yield
        finally:
            self._release()

    def locked(self) -> bool:
        """Whether a taker would wait now."""
        return self._free == 0

    async def _acquire(self, priority: Priority) -> None:
        if self._free > 0 and not any(self._waiters.values()):
            self._free -= 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters[priority].append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release()  # handed a slot just as it was cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):  # a release may have dropped it already
                    self._waiters[priority].remove(waiter)
            raise

    def _release(self) -> None:
        for priority in PRIORITIES:
            waiters = self._waiters[priority]
            while waiters:
                waiter = waiters.popleft()
                if not waiter.done():
                    waiter.set_result(None)  # the slot passes straight to it
                    return
        self._free += 1
