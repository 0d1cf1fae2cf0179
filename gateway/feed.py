"""The status feed: records every status event in the store and hands it to the hub.

Two sources on one channel, both bound to the ``status`` exchange:

- this process's live queue (exclusive, auto-delete, no acks): every event,
  as it happens, so this process's streams see events of tasks that other
  gateways accepted;
- ``status.journal`` (durable, single active consumer, acked after the commit):
  the events published while no gateway was up, so nothing is lost.

Both go through one inbox and one recorder task, in arrival order. Recording
is idempotent by event_id, so the copy that comes second gets the sequence
number the first one got, and the hub is told about each event once.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from dataclasses import dataclass

import aiormq
import msgspec
from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection
from aiormq.abc import DeliveredMessage

from rpc.connection import CONNECTION_ERRORS, close_channels, open_channel
from rpc.dead_letter import Letter
from rpc.wire import Properties
from workers.messages import StatusEvent, event_decoder
from workers.topology import (
    STATUS_DEAD_QUEUE,
    STATUS_EXCHANGE,
    STATUS_JOURNAL_QUEUE,
    declare_status,
)

from .hub import Hub
from .metrics import EVENTS_RECORDED, TASKS_FINISHED
from .publisher import Publisher
from .store import TaskStore

logger = logging.getLogger(__name__)

# Events recorded in one transaction, at most; also the journal's prefetch.
BATCH_SIZE = 256
# Event ids already handed to the hub, remembered to skip the second copy.
RECENT_EVENTS = 65_536
# Pause before a failed commit is tried again (the journal's messages are requeued).
STORE_RETRY_S = 1.0


@dataclass(frozen=True, slots=True)
class _Delivery:
    message: DeliveredMessage
    from_journal: bool


class StatusFeed:
    """Consumes the live queue and the journal; create, then ``await feed.start(connection)``."""

    def __init__(self, store: TaskStore, hub: Hub, publisher: Publisher) -> None:
        self._store = store
        self._hub = hub
        self._publisher = publisher
        self._inbox: asyncio.Queue[_Delivery] = asyncio.Queue()
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._channel: AbstractRobustChannel | None = None
        self._recorder: asyncio.Task[None] | None = None
        self._consuming = False

    @property
    def ready(self) -> bool:
        return self._consuming and self._channel is not None and not self._channel.is_closed

    async def start(self, connection: AbstractRobustConnection) -> None:
        if self._recorder is None:
            self._recorder = asyncio.create_task(self._record_forever(), name="status-recorder")
        self._channel = await open_channel(connection, self._consume, on_lost=self._lost)

    async def close(self) -> None:
        if self._recorder is not None:
            self._recorder.cancel()
        await close_channels(self._channel)

    async def _consume(self, channel: aiormq.abc.AbstractChannel) -> None:
        """Declare and consume both queues; runs again after every reconnect."""
        await declare_status(channel)
        await channel.basic_qos(prefetch_count=BATCH_SIZE)
        live = await channel.queue_declare("", exclusive=True, auto_delete=True)
        assert live.queue is not None
        await channel.queue_bind(live.queue, STATUS_EXCHANGE, routing_key="#")
        await channel.basic_consume(live.queue, self._on_live, no_ack=True, exclusive=True)
        await channel.basic_consume(STATUS_JOURNAL_QUEUE, self._on_journal)
        if self._consuming:
            logger.info("status feed back; streams re-read the store")
        self._consuming = True
        # Events published while the live queue was gone reach the store through the
        # journal, possibly in another process: streams must not wait on the hub alone.
        self._hub.resync()

    def _lost(self, exc: BaseException | None) -> None:
        self._consuming = False

    # Both callbacks enqueue without awaiting, so the inbox keeps the delivery order.
    async def _on_live(self, message: DeliveredMessage) -> None:
        self._inbox.put_nowait(_Delivery(message, from_journal=False))

    async def _on_journal(self, message: DeliveredMessage) -> None:
        self._inbox.put_nowait(_Delivery(message, from_journal=True))

    async def _record_forever(self) -> None:
        while True:
            batch = [await self._inbox.get()]
            while len(batch) < BATCH_SIZE and not self._inbox.empty():
                batch.append(self._inbox.get_nowait())
            try:
                await self._record(batch)
            except Exception:
                logger.exception("could not record %d status events; retrying", len(batch))
                await _settle(batch, requeue=True)
                await asyncio.sleep(STORE_RETRY_S)

    async def _record(self, batch: list[_Delivery]) -> None:
        events: list[tuple[StatusEvent, bytes]] = []
        for delivery in batch:
            try:
                events.append((event_decoder.decode(delivery.message.body), delivery.message.body))
            except msgspec.DecodeError as exc:
                key = delivery.message.routing_key
                logger.warning("undecodable status event (%s): %s", key, exc)
                if delivery.from_journal:
                    await self._bury(delivery.message, f"undecodable status event: {exc}")
        stored = await self._store.record(events) if events else []
        kinds = {event.task_id: event.kind for event, _ in events}
        for event in stored:
            key = f"{event.task_id}/{event.seq}"
            if key in self._recent:
                continue
            self._recent[key] = None
            if len(self._recent) > RECENT_EVENTS:
                self._recent.popitem(last=False)
            self._hub.publish(event)
            EVENTS_RECORDED.labels(event.state).inc()
            if event.terminal:
                TASKS_FINISHED.labels(kinds[event.task_id], event.state).inc()
        await _settle(batch, requeue=None)

    async def _bury(self, message: DeliveredMessage, reason: str) -> None:
        """Move an unusable journal message to ``status.dead`` with the reason in a header.

        If that fails, the journal's own dead-lettering takes it (without the reason):
        it is never acked unburied, nor requeued to come back forever.
        """
        properties = message.header.properties
        letter = Letter(
            message.body,
            Properties(
                content_type=properties.content_type,
                message_id=properties.message_id,
                correlation_id=properties.correlation_id,
                message_type=properties.message_type,
                timestamp=properties.timestamp,
                headers=dict(properties.headers or {}),
            ),
        )
        buried = await self._publisher.dead_letter(
            letter, STATUS_DEAD_QUEUE, reason, source_queue=STATUS_JOURNAL_QUEUE
        )
        if not buried:
            assert message.delivery_tag is not None  # a Deliver always has one
            try:
                await message.channel.basic_nack(message.delivery_tag, requeue=False)
            except CONNECTION_ERRORS:
                pass


async def _settle(batch: list[_Delivery], *, requeue: bool | None) -> None:
    """Ack (requeue=None) or nack the batch's journal deliveries, on the channels they came on.

    A delivery whose channel has closed since is redelivered by the broker anyway.
    """
    last: dict[int, DeliveredMessage] = {}
    for delivery in batch:
        if delivery.from_journal:
            last[id(delivery.message.channel)] = delivery.message
    for message in last.values():
        assert message.delivery_tag is not None  # a Deliver always has one
        try:
            if requeue is None:
                await message.channel.basic_ack(message.delivery_tag, multiple=True)
            else:
                await message.channel.basic_nack(message.delivery_tag, multiple=True, requeue=True)
        except CONNECTION_ERRORS:
            pass
