"""The in-process hub: hands each recorded status event to the streams of its task.

Publishing never waits: each subscription has a bounded buffer, and one that
overflows (a client that stopped reading) is ended and dropped from the hub;
its client reconnects with Last-Event-ID and catches up from the store. A
subscription holds no task of its own and leaves the hub when its stream ends.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Iterator

from .store import StoredEvent

_TIMER_SLACK_S = 0.002


class Subscription:
    """One stream's view of the hub: a bounded buffer and a way to wait on it."""

    __slots__ = (
        "_capacity",
        "_events",
        "_timer",
        "_waiter",
        "_wake_at",
        "ended",
        "resync",
        "task_id",
    )

    def __init__(self, task_id: str, capacity: int) -> None:
        self.task_id = task_id
        self._capacity = capacity
        self._events: deque[StoredEvent] = deque()
        self._waiter: asyncio.Future[None] | None = None
        # A bare timer, not asyncio.timeout(): thousands of idle streams each hold one. It
        # outlives a wait that ends early and is moved on when it fires, so a stream that
        # gets an event every second arms it once per timeout, not once per event.
        self._timer: asyncio.TimerHandle | None = None
        self._wake_at = 0.0  # loop time when the current wait times out
        # Why the hub ended this subscription ("overflow", "shutdown"), or None.
        self.ended: str | None = None
        # Set when events may have bypassed the hub: read the store before trusting it again.
        self.resync = False

    def take(self) -> list[StoredEvent]:
        """The buffered events, oldest first, emptying the buffer."""
        events = list(self._events)
        self._events.clear()
        return events

    async def wait(self, timeout_s: float) -> None:
        """Until there is something to take, a resync, an end, or ``timeout_s`` passes."""
        if self._events or self.resync or self.ended:
            return
        loop = asyncio.get_running_loop()
        self._wake_at = loop.time() + timeout_s
        timer = self._timer
        if timer is not None and timer.when() > self._wake_at:
            timer.cancel()
            timer = None
        if timer is None:
            self._timer = loop.call_at(self._wake_at, self._time_up)
        waiter = self._waiter = loop.create_future()
        try:
            await waiter
        finally:
            self._waiter = None

    def close(self) -> None:
        """Drop the timer (the stream is over)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _time_up(self) -> None:
        self._timer = None
        if self._waiter is None:
            return  # not waiting: the next wait arms it again
        loop = self._waiter.get_loop()
        # Timers may fire up to a clock tick early: that is time enough.
        if loop.time() < self._wake_at - _TIMER_SLACK_S:
            self._timer = loop.call_at(self._wake_at, self._time_up)
        else:
            _resolve(self._waiter)

    def end(self, reason: str) -> None:
        if self.ended is None:
            self.ended = reason
        self._wake()

    def _push(self, event: StoredEvent) -> bool:
        """Buffer ``event``; False (and ended) if the buffer was full."""
        if len(self._events) >= self._capacity:
            self._events.clear()
            self.end("overflow")
            return False
        self._events.append(event)
        self._wake()
        return True

    def _request_resync(self) -> None:
        self.resync = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None:
            _resolve(self._waiter)


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class Hub:
    """Subscriptions by task id; ``publish`` is called with each recorded event."""

    def __init__(self, *, capacity: int) -> None:
        self._capacity = capacity
        self._by_task: dict[str, set[Subscription]] = {}
        # Subscriptions to every task's events (the admin stream).
        self._every: set[Subscription] = set()
        # Called with every event, before the streams get it (gateway/admin/throughput.py).
        self.taps: list[Callable[[StoredEvent], None]] = []

    def __len__(self) -> int:
        return len(self._every) + sum(len(subs) for subs in self._by_task.values())

    @contextlib.contextmanager
    def subscribe(self, task_id: str) -> Iterator[Subscription]:
        """A subscription to ``task_id``'s events for the duration of the ``with`` block."""
        subscription = Subscription(task_id, self._capacity)
        self._by_task.setdefault(task_id, set()).add(subscription)
        try:
            yield subscription
        finally:
            subscription.close()
            self._remove(subscription)

    @contextlib.contextmanager
    def subscribe_all(self, capacity: int) -> Iterator[Subscription]:
        """A subscription to every task's events, buffering up to ``capacity``."""
        subscription = Subscription("", capacity)
        self._every.add(subscription)
        try:
            yield subscription
        finally:
            subscription.close()
            self._every.discard(subscription)

    def publish(self, event: StoredEvent) -> None:
        for tap in self.taps:
            tap(event)
        for subscription in list(self._every):
            if not subscription._push(event):
                self._every.discard(subscription)
        subscriptions = self._by_task.get(event.task_id)
        if not subscriptions:
            return
        for subscription in list(subscriptions):
            if not subscription._push(event):
                self._remove(subscription)

    def resync(self) -> None:
        """Tell every stream to read the store: the live feed may have missed events."""
        for subscriptions in self._by_task.values():
            for subscription in subscriptions:
                subscription._request_resync()

    def end_all(self, reason: str) -> None:
        for subscription in list(self._every):
            subscription.end(reason)
        for subscriptions in list(self._by_task.values()):
            for subscription in list(subscriptions):
                subscription.end(reason)

    def _remove(self, subscription: Subscription) -> None:
        subscriptions = self._by_task.get(subscription.task_id)
        if subscriptions is None:
            return
        subscriptions.discard(subscription)
        if not subscriptions:
            del self._by_task[subscription.task_id]
