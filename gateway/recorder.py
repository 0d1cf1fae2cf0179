"""The recorder: stores each status event once, numbers it, and fans it out to every gateway.

Workers publish status events to ``status``; an internal consistent-hash
exchange spreads them over the journal shards ``status.journal.<k>`` by task
id (workers/topology.py). Every gateway consumes every shard it records
(``RECORDER_RECORDS``), and each shard has a single active consumer, so one
recorder at a time takes a shard's events, in publish order. For a batch it:

1. checks that a worker sent it (``user_id``, workers/senders.py), decodes and
   checks each event (workers.messages.decode_status_event);
2. records the good ones in one store transaction (idempotent by event_id);
3. publishes each recorded event, with its sequence number in the routing key,
   to the ``status.recorded`` fanout, which every gateway's live feed
   (gateway/feed.py) hands to its hub; and waits for the broker's confirms;
4. acks the batch.

Poison is isolated per message: an event from anyone but a worker, one that
fails to decode or validate, that the store rejects (it came after its task's
terminal event), or whose write raises anything but StoreUnavailable is
dead-lettered alone to ``status.dead`` with the reason, and the rest of its
batch is recorded. StoreUnavailable keeps the batch in hand and tries it again:
nothing is requeued, so a store outage does not count against a queue's
delivery limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from infra.background import cancel_and_wait
from rpc.connection import close_channels
from rpc.dead_letter import dead_letter
from rpc.wire import Channel, Delivery, Properties, RobustChannel, WireConnection, WireError
from workers.messages import InvalidStatusEvent, StatusEvent, decode_status_event
from workers.senders import status_senders
from workers.topology import (
    CONTENT_TYPE,
    STATUS_DEAD_QUEUE,
    STATUS_RECORDED_EXCHANGE,
    declare_recorded,
    declare_status,
    recorded_routing_key,
    status_journal,
)

from .metrics import EVENTS_RECORDED, STATUS_EVENTS_DEAD, TASKS_FINISHED, kind_label
from .store import RejectedEvent, StoredEvent, StoreUnavailable, TaskStore

logger = logging.getLogger(__name__)

# Events recorded in one transaction, at most; also each shard consumer's prefetch.
BATCH_SIZE = 256
# How long a batch that is not full waits for more events, by default (RECORDER_LINGER_MS;
# bench/sse.py: see docs/benchmarks.md).
BATCH_LINGER_S = 0.005
# Pause before a write the store could not take is tried again.
STORE_RETRY_S = 1.0
# How long closing waits for the batch in hand to be recorded and acked.
CLOSE_WAIT_S = 2.0
# How often the journal shards' backlog is counted (a passive declare per shard).
BACKLOG_EVERY_S = 1.0
# Recorded events go to live queues that die with their gateway: transient is enough,
# and a stream that misses one reads the store (gap detection, resync on reconnect).
RECORDED_PROPERTIES = Properties(content_type=CONTENT_TYPE, delivery_mode=1)


@dataclass(slots=True)
class _Item:
    message: Delivery
    queue: str
    arrived_at: float  # time.monotonic()
    event: StatusEvent | None = None


class Recorder:
    """Records the journal shards this process is given; create, then ``await start(conn)``."""

    def __init__(
        self,
        store: TaskStore,
        *,
        shards: int,
        records: Sequence[int] | None = None,
        linger_s: float = BATCH_LINGER_S,
    ) -> None:
        self._store = store
        self._linger_s = linger_s
        self._shards = shards
        self._records = tuple(range(shards)) if records is None else tuple(records)
        unknown = [shard for shard in self._records if not 0 <= shard < shards]
        if unknown:
            raise ValueError(f"no journal shard {unknown} among {shards}")
        self._inbox: deque[_Item] = deque()
        self._wake = asyncio.Event()
        # Arrival time of the oldest event in the batch being recorded (None: idle).
        self._busy_since: float | None = None
        self._channel: RobustChannel | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._backlog = 0
        self._idle = asyncio.Event()
        self._consuming = False
        self._senders = status_senders(None)

    @property
    def ready(self) -> bool:
        return self._consuming and self._channel is not None and not self._channel.is_closed

    def lag_s(self) -> float:
        """How long the oldest event this process holds unrecorded has waited (0: none)."""
        oldest = self._busy_since
        if oldest is None and self._inbox:
            oldest = self._inbox[0].arrived_at
        return 0.0 if oldest is None else time.monotonic() - oldest

    @property
    def backlog(self) -> int:
        """Events waiting in the journal shards, as last counted (every BACKLOG_EVERY_S)."""
        return self._backlog

    async def _count_forever(self) -> None:
        # Counted apart from /readyz: a count the broker is slow to answer (paused, or
        # blocked: 3.10 stops reading the connection) must not be cancelled, which would
        # leave the channel out of step and close it.
        while True:
            await asyncio.sleep(BACKLOG_EVERY_S)
            raw = self._channel.raw if self._channel is not None else None
            if raw is None or raw.is_closed or not self._consuming:
                continue
            try:
                total = 0
                for shard in range(self._shards):
                    ok = await raw.queue_declare(status_journal(shard), passive=True)
                    total += ok.message_count or 0
            except WireError:
                continue  # the channel is lost and reopens; count again then
            self._backlog = total

    async def start(self, connection: WireConnection) -> None:
        self._senders = status_senders(connection.user_id)
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._record_forever(), name="status-recorder"),
                asyncio.create_task(self._count_forever(), name="status-backlog"),
            ]
        self._channel = await connection.open_channel(
            self._consume, on_lost=self._lost, publisher_confirms=True
        )

    async def close(self) -> None:
        """Let the batch in hand finish (within CLOSE_WAIT_S), then stop and close the channel.

        A batch cut short is recorded again by the next recorder (idempotent), but
        a gateway that stops often would otherwise leave its last events to others.
        """
        if self._busy_since is not None:
            self._idle.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CLOSE_WAIT_S):
                    await self._idle.wait()
        for task in self._tasks:
            await cancel_and_wait(task)
        await close_channels(self._channel)

    async def _consume(self, channel: Channel) -> None:
        """Declare, then consume the shards; runs again after every reconnect."""
        await declare_status(channel, self._shards)
        await declare_recorded(channel)
        await channel.basic_qos(prefetch_count=BATCH_SIZE)
        for shard in self._records:
            queue = status_journal(shard)
            await channel.basic_consume(queue, self._receiver(queue))
        self._consuming = True

    def _lost(self, exc: BaseException | None) -> None:
        self._consuming = False

    def _receiver(self, queue: str) -> Callable[[Delivery], None]:
        def receive(message: Delivery) -> None:
            # Inline, as each message completes: the inbox keeps each shard's order.
            self._inbox.append(_Item(message, queue, time.monotonic()))
            self._wake.set()

        return receive

    async def _record_forever(self) -> None:
        while True:
            if not self._inbox:
                self._wake.clear()
                await self._wake.wait()
            if len(self._inbox) < BATCH_SIZE:
                # A few ms for more to come: each batch costs a transaction, a thread hop
                # and a wait for confirms, whatever its size.
                await asyncio.sleep(self._linger_s)
            batch = [self._inbox.popleft() for _ in range(min(BATCH_SIZE, len(self._inbox)))]
            self._busy_since = batch[0].arrived_at
            try:
                await self._record(batch)
            except asyncio.CancelledError:
                raise
            except Exception:
                # A bug of ours, not the events': back to their shards, tried again in a while.
                logger.exception("recording %d status events failed; requeued", len(batch))
                await asyncio.sleep(STORE_RETRY_S)
                for item in batch:
                    with contextlib.suppress(WireError):
                        item.message.channel.basic_nack(item.message.delivery_tag, requeue=True)
            finally:
                self._busy_since = None
                self._idle.set()

    async def _record(self, batch: list[_Item]) -> None:
        good: list[_Item] = []
        poison: list[tuple[_Item, str]] = []
        for item in batch:
            refused = self._senders.refusal(item.message.properties)
            if refused is not None:
                poison.append((item, refused))
                continue
            try:
                item.event = decode_status_event(item.message.body)
            except InvalidStatusEvent as exc:
                poison.append((item, str(exc)))
            else:
                good.append(item)
        results = await self._store_isolating(good)
        published: list[tuple[_Item, asyncio.Future[bool]]] = []
        recorded: Counter[str] = Counter()  # by state: a metric update per batch, not per event
        for item, result in zip(good, results, strict=True):
            if isinstance(result, StoredEvent):
                # Not self._channel: the first deliveries come before open_channel returns it.
                future = self._fan_out(result, item.message.channel)
                if future is None:
                    continue  # its channel is gone: the delivery comes back anyway
                published.append((item, future))
                assert item.event is not None
                recorded[result.state] += 1
                if result.terminal:
                    TASKS_FINISHED.labels(kind_label(item.event.kind), result.state).inc()
            elif isinstance(result, RejectedEvent):
                poison.append((item, f"not recorded: {result.reason}"))
            else:
                poison.append((item, f"the store could not record it: {result!r}"))
        for state, count in recorded.items():
            EVENTS_RECORDED.labels(state).inc(count)
        await asyncio.gather(*(self._bury(item, reason) for item, reason in poison))
        for item, future in published:
            try:
                await future
            except Exception as exc:
                # Recorded but not fanned out: back to its shard, to be fanned out again.
                logger.warning("could not fan out a recorded status event: %r", exc)
                with contextlib.suppress(WireError):
                    item.message.channel.basic_nack(item.message.delivery_tag, requeue=True)
                continue
            item.message.ack()

    async def _store_isolating(
        self, items: list[_Item]
    ) -> list[StoredEvent | RejectedEvent | Exception]:
        """One result per item; a write error (not StoreUnavailable) is its event's alone."""
        if not items:
            return []
        try:
            return list(await self._store_retrying(items))
        except Exception as exc:
            logger.warning("recording %d status events failed (%r); one by one", len(items), exc)
        results: list[StoredEvent | RejectedEvent | Exception] = []
        for item in items:
            try:
                results.extend(await self._store_retrying([item]))
            except Exception as exc:
                results.append(exc)
        return results

    async def _store_retrying(self, items: list[_Item]) -> list[StoredEvent | RejectedEvent]:
        """Record ``items`` in one transaction, as often as StoreUnavailable says "not now"."""
        pairs = [(item.event, item.message.body) for item in items if item.event is not None]
        while True:
            try:
                return await self._store.record(pairs)
            except StoreUnavailable as exc:
                logger.warning("the store cannot record status events now (%s); retrying", exc)
                await asyncio.sleep(STORE_RETRY_S)

    def _fan_out(self, event: StoredEvent, channel: Channel) -> asyncio.Future[bool] | None:
        """Publish ``event`` on ``channel``, the one its delivery came on, whose ack follows.

        None if that channel is closed: the delivery comes back, on another.
        """
        if channel.is_closed:
            return None
        return channel.publish(
            event.body,
            exchange=STATUS_RECORDED_EXCHANGE,
            routing_key=recorded_routing_key(event.task_id, event.seq, event.state),
            properties=RECORDED_PROPERTIES,
        )

    async def _bury(self, item: _Item, reason: str) -> None:
        """Move one message to ``status.dead`` with ``reason``, then ack it.

        If the copy fails, a nack: the shard's own dead-lettering takes it (without
        the reason). It is never acked unburied, nor requeued to come back forever.
        """
        STATUS_EVENTS_DEAD.inc()
        message = item.message
        buried = await dead_letter(
            message.channel, message, STATUS_DEAD_QUEUE, reason, source_queue=item.queue
        )
        if buried:
            message.ack()
            return
        with contextlib.suppress(WireError):  # a closed channel: redelivered anyway
            message.channel.basic_nack(message.delivery_tag, requeue=False)
