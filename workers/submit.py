"""Submit tasks and await their outcome: the Python API used by the gateway and benchmarks.

One exclusive, auto-delete queue per submitter (per process, normally) is
bound to ``status``; events of the tasks this submitter tracks are kept from
the moment of submission, so an outcome that arrives before ``wait`` is called
is not missed. Events of untracked tasks are dropped. Events published while
the connection is down are not seen here (the ``status.journal`` queue keeps
them for the gateway's store).

A delayed task (``delay_s``, ``run_at``) is not published now: a ``Scheduler``
keeps it until it is due. The gateway's is the outbox in the shared store
(``gateway.outbox.OutboxScheduler``), which the gateways' relays publish from.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec

from rpc.connection import close_channels
from rpc.errors import BrokerRefused, BrokerUnavailable
from rpc.wire import BrokerError, Channel, Delivery, RobustChannel, Unavailable, WireConnection

from .errors import WaitTimeout
from .messages import (
    StatusEvent,
    TaskMessage,
    due_time,
    encoder,
    event_decoder,
    new_event,
    new_task_id,
    publish_task,
    scheduled_event,
)
from .status import publish_status
from .topology import (
    DEFAULT_QUEUE_MAX_LENGTH,
    STATUS_EXCHANGE,
    Priority,
    declare_kind,
    declare_status_exchange,
)

logger = logging.getLogger(__name__)


class Scheduler(Protocol):
    """Keeps delayed tasks until they are due, then publishes them."""

    async def schedule(self, message: TaskMessage, priority: Priority, run_at: float) -> None:
        """Keep ``message`` (durably) and publish it at ``priority`` from ``run_at`` (Unix time)."""
        ...


@dataclass(eq=False)
class _Watch:
    events: list[StatusEvent] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)
    terminal: StatusEvent | None = None
    # Replaced on every new event; readers await the one they saw last.
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, event: StatusEvent) -> None:
        if event.event_id in self.seen:
            return  # a republished outcome (redelivery after a crash)
        self.seen.add(event.event_id)
        self.events.append(event)
        if event.terminal and self.terminal is None:
            self.terminal = event
        changed, self.changed = self.changed, asyncio.Event()
        changed.set()


class TaskSubmitter:
    """Submits tasks with publisher confirms and follows their status events.

    Create with ``await TaskSubmitter.create(connection)``; close with
    ``await submitter.close()`` or use it as an async context manager.
    """

    def __init__(
        self,
        *,
        binding_keys: tuple[str, ...],
        max_finished: int,
        queue_max_length: int,
        scheduler: Scheduler | None = None,
    ) -> None:
        self._binding_keys = binding_keys
        self._scheduler = scheduler
        self._queue_max_length = queue_max_length
        self._max_finished = max_finished
        self._watches: dict[str, _Watch] = {}
        # Finished watches, oldest first; trimmed to max_finished so unawaited tasks do not leak.
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._declared: set[str] = set()
        self._channel: RobustChannel | None = None
        self._closed = False

    @classmethod
    async def create(
        cls,
        connection: WireConnection,
        *,
        binding_keys: Iterable[str] = ("#",),
        max_finished: int = 10_000,
        queue_max_length: int = DEFAULT_QUEUE_MAX_LENGTH,
        scheduler: Scheduler | None = None,
    ) -> TaskSubmitter:
        """Open the submitter's channel and start listening for status events.

        ``binding_keys`` narrow what this process receives (``<kind>.<task_id>.<state>``
        patterns, e.g. ``images.thumbnail.#``, or ``topology.TERMINAL_BINDING_KEYS`` when
        only ``wait`` is used); the default sees every event. ``scheduler`` keeps
        delayed tasks (``gateway.outbox.OutboxScheduler``); without one, ``submit``
        takes no delay.
        """
        submitter = cls(
            binding_keys=tuple(binding_keys),
            max_finished=max_finished,
            queue_max_length=queue_max_length,
            scheduler=scheduler,
        )
        try:
            submitter._channel = await connection.open_channel(
                submitter._listen, publisher_confirms=True
            )
        except Unavailable as exc:
            raise BrokerUnavailable(f"cannot open the submitter's channel: {exc}") from exc
        except BrokerError as exc:  # a declaration or a permission: configuration
            raise BrokerRefused(exc.code, exc.text) from exc
        return submitter

    async def __aenter__(self) -> TaskSubmitter:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await close_channels(self._channel)

    async def submit(
        self,
        kind: str,
        payload: Any = None,
        *,
        task_id: str | None = None,
        priority: Priority = "normal",
        delay_s: float | None = None,
        run_at: float | None = None,
    ) -> str:
        """Publish a ``queued`` event and the task; return its id once the broker has both.

        ``priority="high"`` work overtakes the kind's queued normal work. With
        ``delay_s`` or ``run_at`` (Unix time) in the future, a ``scheduled`` event
        goes out and the scheduler keeps the task until then (ValueError without
        one). Declares the kind's queues on first use, so tasks wait there until a
        worker starts. Raises BrokerUnavailable if the broker is down or refuses
        the message.
        """
        channel = self._channel
        if self._closed or channel is None:
            raise BrokerUnavailable("the submitter is closed")
        now = time.time()
        due = due_time(delay_s, run_at, now)
        if due is not None and self._scheduler is None:
            raise ValueError("a delayed task needs the submitter's scheduler (see create)")
        task_id = task_id or new_task_id()
        message = TaskMessage(
            task_id=task_id,
            kind=kind,
            payload=msgspec.Raw(encoder.encode(payload)),
            submitted_at=now,
        )
        if kind not in self._declared:
            try:
                await declare_kind(
                    await channel.get_underlay_channel(), kind, max_length=self._queue_max_length
                )
            except Unavailable as exc:
                raise BrokerUnavailable(f"cannot declare the queue of {kind!r}: {exc}") from exc
            except BrokerError as exc:  # 406: the queue exists with other arguments
                raise BrokerRefused(exc.code, exc.text) from exc
            self._declared.add(kind)
        self.track(task_id)
        # queued (scheduled) goes first so no consumer sees a task's running before it.
        if due is not None and self._scheduler is not None:
            await publish_status(channel, scheduled_event(kind, task_id, due))
            await self._scheduler.schedule(message, priority, due)
            return task_id
        await publish_status(channel, new_event(kind, task_id, "queued", 1))
        await publish_task(channel, message, priority)
        return task_id

    def track(self, task_id: str) -> None:
        """Start (or restart, e.g. before a replay) keeping the events of ``task_id``."""
        self._finished.pop(task_id, None)
        self._watches[task_id] = _Watch()

    async def wait(self, task_id: str, timeout_s: float) -> StatusEvent:
        """The terminal event (succeeded, failed or dead) of ``task_id``; WaitTimeout if none comes.

        The task must have been submitted (or tracked) by this submitter first.
        """
        watch = self._watches.get(task_id)
        if watch is None:
            self.track(task_id)
            watch = self._watches[task_id]
        try:
            async with asyncio.timeout(timeout_s):
                while watch.terminal is None:
                    await watch.changed.wait()
        except TimeoutError:
            raise WaitTimeout(f"task {task_id} did not finish within {timeout_s} s") from None
        return watch.terminal

    async def events(self, task_id: str) -> AsyncIterator[StatusEvent]:
        """Every event of ``task_id`` since it was submitted, in order, up to its terminal one."""
        watch = self._watches.get(task_id)
        if watch is None:
            self.track(task_id)
            watch = self._watches[task_id]
        index = 0
        while True:
            while index < len(watch.events):
                event = watch.events[index]
                index += 1
                yield event
                if event.terminal:
                    return
            await watch.changed.wait()

    async def submit_and_wait(
        self, kind: str, payload: Any = None, *, timeout_s: float
    ) -> StatusEvent:
        """``submit`` then ``wait``; the terminal event."""
        task_id = await self.submit(kind, payload)
        return await self.wait(task_id, timeout_s)

    def forget(self, task_id: str) -> None:
        """Stop keeping the events of ``task_id``."""
        self._watches.pop(task_id, None)
        self._finished.pop(task_id, None)

    async def _listen(self, channel: Channel) -> None:
        """Declare this submitter's status queue and consume it; runs on every reconnect."""
        self._declared.clear()
        await declare_status_exchange(channel)
        declared = await channel.queue_declare("", exclusive=True, auto_delete=True)
        assert declared.queue is not None
        for key in self._binding_keys:
            await channel.queue_bind(declared.queue, STATUS_EXCHANGE, routing_key=key)
        await channel.basic_consume(declared.queue, self._on_event, no_ack=True, exclusive=True)

    def _on_event(self, message: Delivery) -> None:
        try:
            event = event_decoder.decode(message.body)
        except msgspec.DecodeError:
            logger.warning("dropping an undecodable status event (%s)", message.routing_key)
            return
        watch = self._watches.get(event.task_id)
        if watch is None:
            return
        watch.add(event)
        if watch.terminal is not None and event.task_id not in self._finished:
            self._finished[event.task_id] = None
            while len(self._finished) > self._max_finished:
                old, _ = self._finished.popitem(last=False)
                self._watches.pop(old, None)
