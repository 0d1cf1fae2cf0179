"""The worker: consumes task queues, runs handlers, acks, retries and dead-letters.

A delivery is acked only after its outcome is safely with the broker: the
terminal status event (succeeded, failed), the retry copy in a delay tier plus
its ``retrying`` event, or the dead letter plus its ``dead`` event. A worker
that dies before that loses nothing: the broker redelivers the message.

Each delivery is claimed in the store as it arrives, before it waits for a
free handler slot, so prefetched tasks hold leases too; a worker that stops
holding them has them taken over (workers/outcomes.py) and, if it runs again,
acks them without running or finishing them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

import msgspec

from infra.database import Database, open_database
from infra.logs import log_context
from infra.storage import open_storage
from rpc.connection import cancel_consumers, close_channels
from rpc.errors import BrokerRefused, BrokerUnavailable
from rpc.wire import BrokerError, Channel, Delivery, RobustChannel, Unavailable, WireConnection

from . import kinds
from .cancellation import CancelWatch, cancellable
from .claims import Held, new_holder, when_free
from .context import TaskContext
from .deliveries import attempt_of, describe, nack_requeue, priority_of, valid_task_id
from .errors import LeaseLost, PermanentError, TaskCancelled, UntrustedSender
from .failures import Failures, bury, retry_or_bury
from .messages import StatusEvent, Undecodable, decode_task, new_event
from .metrics import MESSAGE_COPIES, STATUS_EVENTS, TASK_SECONDS
from .outcomes import OutcomeLog
from .pool import TaskPool
from .registry import Task, TaskRegistry
from .senders import task_senders
from .settings import WorkerSettings
from .slots import PrioritySlots
from .status import confirmed, forget, publish_status, publish_status_soon, signed
from .topology import (
    PRIORITIES,
    declare_kind,
    declare_retry_tiers,
    declare_status,
    task_queue,
)

logger = logging.getLogger(__name__)


class Worker:
    """Runs the tasks of a registry; ``await start(connection)``, later ``await stop()``."""

    def __init__(
        self,
        registry: TaskRegistry,
        settings: WorkerSettings,
        *,
        name: str = "worker",
        database: Database | None = None,
    ):
        if not len(registry):
            raise ValueError("the registry has no tasks")
        self.registry = registry
        self.settings = settings
        self.name, self.holder = name, new_holder(name)  # holder: in its claims and events
        self.storage = open_storage(settings.storage_config())
        self._consume_channel: RobustChannel | None = None
        self._publish_channel: RobustChannel | None = None
        self._raw: Channel | None = None
        self._consumer_tags: list[str] = []
        self._slots = PrioritySlots(settings.concurrency)
        self._running: set[asyncio.Task[Any]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._stopping = False
        self._pool: TaskPool | None = None
        self._outcomes: OutcomeLog | None = None
        self.cancels: CancelWatch | None = None
        self._database = database  # None: opened from settings.database at start
        self._own_database: Database | None = None

    async def start(self, connection: WireConnection) -> None:
        """Declare the topology and start consuming every registered kind."""
        self._stopping = False
        self._senders = task_senders(connection.user_id)
        if self._outcomes is None:
            await self._open_outcomes()
        try:
            self._publish_channel = await connection.open_channel(
                self._declare, publisher_confirms=True
            )
            self._consume_channel = await connection.open_channel(self._consume)
        except Unavailable as exc:
            raise BrokerUnavailable(f"cannot open the worker's channels: {exc}") from exc
        except BrokerError as exc:  # a declaration or a permission: configuration
            raise BrokerRefused(exc.code, exc.text) from exc
        logger.info("worker %r consuming %s", self.name, ", ".join(self.registry.kinds))

    async def stop(self, grace_s: float | None = None) -> None:
        """Stop consuming; let tasks in flight finish within ``grace_s``, then return the rest.

        Tasks still running after the grace period are cancelled unacked, so the
        broker hands them to another worker.
        """
        grace_s = self.settings.shutdown_grace_s if grace_s is None else grace_s
        self._stopping = True
        await cancel_consumers(self._raw, self._consumer_tags)
        try:
            await asyncio.wait_for(self._idle.wait(), grace_s)
        except TimeoutError:
            logger.warning(
                "%d tasks still running after %s s; returning them to the queue",
                len(self._running),
                grace_s,
            )
            for task in list(self._running):
                task.cancel()
            await asyncio.gather(*self._running, return_exceptions=True)
        await close_channels(self._consume_channel, self._publish_channel)
        if self._pool is not None:
            pool, self._pool = self._pool, None
            # A job already running in the pool cannot be interrupted; this waits for it.
            await pool.shutdown()
        if self._outcomes is not None:
            outcomes, self._outcomes = self._outcomes, None
            await outcomes.close()
        if self.cancels is not None:
            await self.cancels.close()
        if (database := self._own_database) is not None:
            self._own_database = None
            await database.close()

    async def _open_outcomes(self) -> None:
        if (database := self._database) is None:
            database = self._own_database = await open_database(self.settings.database)
        self._outcomes = await OutcomeLog.open(
            database,
            holder=self.holder,
            lease_s=self.settings.task_lease_s,
            legacy_dir=self.settings.storage_dir,
        )
        await kinds.register(database, self.registry.kinds, self.settings.concurrency)
        self.cancels = await CancelWatch.open(database, self.settings)

    def pool(self) -> TaskPool:
        """The process pool for CPU-bound work, started on first use."""
        if self._pool is None:
            self._pool = TaskPool(self.settings.processes)
        return self._pool

    async def _declare(self, channel: Channel) -> None:
        await declare_status(channel, self.settings.status_shards)
        await declare_retry_tiers(channel, self.settings.retry_delays_ms)

    async def _consume(self, channel: Channel) -> None:
        """Declare and consume every kind's queues, a prefetch each; again on each reconnect."""
        if self._stopping:
            return
        await channel.basic_qos(prefetch_count=self.settings.prefetch)
        tags = []
        for task in self.registry:
            await declare_kind(channel, task.kind, max_length=self.settings.queue_max_length)
            consumer = self._make_consumer(task)
            # Normal first: a stop cancels in this order, and stops taking high work last.
            for priority in reversed(PRIORITIES):
                tags.append(await channel.basic_consume(task_queue(task.kind, priority), consumer))
        self._consumer_tags = tags
        self._raw = channel

    def _make_consumer(self, task: Task) -> Callable[[Delivery], Coroutine[Any, Any, None]]:
        async def consume(message: Delivery) -> None:
            current = asyncio.current_task()
            assert current is not None
            self._running.add(current)
            self._idle.clear()
            try:
                await self._process(task, message)
            except BrokerUnavailable as exc:
                # Requeued (or redelivered: channel gone); the outcome log makes a rerun idempotent.
                logger.warning("lost the broker while processing a %s task: %s", task.kind, exc)
                nack_requeue(message)
            except Exception:
                # e.g. the storage is not writable; x-delivery-limit ends a redelivery loop.
                logger.exception("unexpected error processing a %s task", task.kind)
                nack_requeue(message)
            finally:
                self._running.discard(current)
                if not self._running:
                    self._idle.set()

        return consume

    async def _publish(self, event: StatusEvent) -> None:
        assert self._publish_channel is not None
        await publish_status(self._publish_channel, signed(event, self.holder))
        STATUS_EVENTS.labels(event.kind, event.state).inc()

    def _publish_soon(self, event: StatusEvent) -> asyncio.Future[bool]:
        assert self._publish_channel is not None
        future = publish_status_soon(self._publish_channel, signed(event, self.holder))
        STATUS_EVENTS.labels(event.kind, event.state).inc()
        return future

    async def _cancelled(self, task_id: str) -> bool:
        assert self.cancels is not None
        return await self.cancels.asked(task_id)

    async def _end_unstarted(self, task: Task, task_id: str, attempt: int) -> None:
        """End a task cancelled while it waited here, prefetched, without running it."""
        assert self._outcomes is not None
        cancelled = new_event(
            task.kind, task_id, "cancelled", attempt, error="cancelled before it started"
        )
        recorded = await self._outcomes.record(cancelled)
        if recorded is None:
            raise LeaseLost(f"task {task_id} was taken over before it started here")
        await self._publish(recorded)

    def _failures(self) -> Failures:
        assert self._publish_channel is not None
        return Failures(self._publish_channel, self._publish, self.settings)

    async def _publish_held(self, event: StatusEvent) -> None:
        """Publish a handler's event while this worker holds its task; LeaseLost otherwise."""
        assert self._outcomes is not None
        if not await self._outcomes.still_holds(event.task_id):
            raise LeaseLost(f"task {event.task_id} was taken over while it ran here")
        await self._publish(event)

    def _publish_soon_held(self, event: StatusEvent) -> asyncio.Future[bool]:
        """A pool job's progress: dropped unless the lease is surely held (no store access
        from this callback); the job's outcome is checked when it is recorded."""
        assert self._outcomes is not None
        if not self._outcomes.surely_holds(event.task_id):
            done = asyncio.get_running_loop().create_future()
            done.set_result(True)
            return done
        return self._publish_soon(event)

    async def _process(self, task: Task, message: Delivery) -> None:
        properties = message.properties
        headers = dict(properties.headers or {})
        attempt = attempt_of(headers)
        try:
            self._senders.check(properties)
            task_message, payload = decode_task(message.body, task.decoder)
        except (Undecodable, UntrustedSender) as exc:
            task_id = valid_task_id(properties.message_id)
            assert self._outcomes is not None
            if type(exc) is UntrustedSender or (task_id and await self._outcomes.known(task_id)):
                task_id = None  # forged (the id may be another's), or a copy of one that ran
            async with self._slots.take(priority_of(task.kind, message)):
                await bury(
                    self._failures(),
                    task,
                    message,
                    task_id=task_id,
                    attempt=attempt,
                    reason=str(exc),
                )
            message.ack()
            return
        with log_context(task_id=task_message.task_id, kind=task.kind):
            await self._run(task, message, task_message.task_id, payload, attempt, headers)

    async def _run(
        self,
        task: Task,
        message: Delivery,
        task_id: str,
        payload: Any,
        attempt: int,
        headers: dict[str, Any],
    ) -> None:
        """Run a decoded task once, whatever copies of it arrive where (workers/outcomes.py).

        The claim is taken before the task waits for a handler slot: a
        prefetched task holds a lease too.
        """
        outcomes = self._outcomes
        assert outcomes is not None
        held = Held(task.kind, message.body, attempt, priority_of(task.kind, message))
        start = await when_free(
            lambda: outcomes.start(task_id, held),
            consumer=task.kind,
            stopping=lambda: self._stopping,
        )
        if start is None:
            nack_requeue(message)  # stopping while another worker held it
            return
        if start.done:
            MESSAGE_COPIES.labels(task.kind, "ignored").inc()
            message.ack()
            return
        settled = False
        # A prefetched task's claim predates any cancel, so the cancel was only requested.
        prefetched = self._slots.locked()
        try:
            async with self._slots.take(priority_of(task.kind, message)):
                if self._stopping:
                    # Prefetched but not started: give it back now rather than at exit.
                    nack_requeue(message)
                    return
                if start.republish is None and prefetched and await self._cancelled(task_id):
                    await self._end_unstarted(task, task_id, attempt)
                elif start.republish is None:
                    await self._execute(task, message, task_id, payload, attempt, headers)
                else:
                    MESSAGE_COPIES.labels(task.kind, "republished").inc()
                    await self._publish(start.republish)
            message.ack()
            settled = True
        except LeaseLost:
            # Taken over while this worker was stopped: the task runs (or ran) elsewhere,
            # from a copy the watchdog published. This delivery is no longer needed.
            MESSAGE_COPIES.labels(task.kind, "taken_over").inc()
            logger.warning("task %s was taken over by another worker; dropped here", task_id)
            message.ack()
            settled = True
        finally:
            outcomes.release(task_id, settled=settled)

    async def _execute(
        self,
        task: Task,
        message: Delivery,
        task_id: str,
        payload: Any,
        attempt: int,
        headers: dict[str, Any],
    ) -> None:
        """Run the task once; its outcome recorded and published (or retry or dead letter).

        LeaseLost: another worker took the task over; nothing more is published here.
        """
        outcomes = self._outcomes
        assert outcomes is not None and self.cancels is not None
        if not await outcomes.still_holds(task_id):
            raise LeaseLost(f"task {task_id} was taken over before it started here")
        # "running" goes out without waiting for its confirm, so the handler's first progress
        # event shares its write; the attempt's outcome waits for that confirm (below).
        running = self._publish_soon(new_event(task.kind, task_id, "running", attempt))
        started = time.perf_counter()
        try:
            with self.cancels.watch(task_id, task.kind) as cancellation:
                ctx = TaskContext(
                    task_id=task_id,
                    kind=task.kind,
                    attempt=attempt,
                    redelivered=message.redelivered,
                    settings=self.settings,
                    storage=self.storage,
                    publish=self._publish_held,
                    publish_soon=self._publish_soon_held,
                    pool=self.pool,
                    cancellation=cancellation,
                )
                result = await cancellable(
                    task.handler(ctx, payload), cancellation, stopping=lambda: self._stopping
                )
        except PermanentError as exc:
            outcome = new_event(task.kind, task_id, "failed", attempt, error=describe(exc))
        except TaskCancelled as exc:
            outcome = new_event(task.kind, task_id, "cancelled", attempt, error=describe(exc))
        except (BrokerUnavailable, LeaseLost, asyncio.CancelledError):
            # From ctx.progress (not the task's fault), or a stop: leave it unacked for
            # redelivery; or another worker has it now.
            forget(running)
            raise
        except Exception as exc:
            await confirmed(running)
            if not await outcomes.still_holds(task_id):
                raise LeaseLost(f"task {task_id} was taken over while it ran here") from exc
            await retry_or_bury(self._failures(), task, message, task_id, attempt, headers, exc)
            return
        else:
            try:
                outcome = new_event(
                    task.kind, task_id, "succeeded", attempt, result=msgspec.to_builtins(result)
                )
            except TypeError as exc:
                logger.error("task %s (%s) returned an unencodable result", task_id, task.kind)
                outcome = new_event(
                    task.kind, task_id, "failed", attempt, error=f"unencodable result: {exc}"
                )
        run_s = time.perf_counter() - started
        TASK_SECONDS.labels(task.kind).observe(run_s)
        await confirmed(running)
        recorded = await outcomes.record(outcome, run_s=run_s)
        if recorded is None:
            raise LeaseLost(f"task {task_id} was taken over while it ran here; result dropped")
        await self._publish(recorded)
