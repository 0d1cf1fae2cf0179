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
import contextlib
import logging
from collections import OrderedDict
from dataclasses import dataclass

import msgspec

from rpc.connection import close_channels
from rpc.wire import Channel, Delivery, RobustChannel, WireConnection, WireError
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
from .store import RejectedEvent, TaskStore

logger = logging.getLogger(__name__)

# Events recorded in one transaction, at most; also the journal's prefetch.
BATCH_SIZE = 256
# Event ids already handed to the hub, remembered to skip the second copy.
RECENT_EVENTS = 65_536
# Pause before a failed commit is tried again (the journal's messages are requeued).
STORE_RETRY_S = 1.0


@dataclass(slots=True)
class _Delivery:
    message: Delivery
    from_journal: bool
    # Nacked on its own (an unburied poison message): not to be acked with the batch.
    settled: bool = False


class StatusFeed:
    """Consumes the live queue and the journal; create, then ``await feed.start(connection)``."""

    def __init__(self, store: TaskStore, hub: Hub, publisher: Publisher) -> None:
        self._store = store
        self._hub = hub
        self._publisher = publisher
        self._inbox: asyncio.Queue[_Delivery] = asyncio.Queue()
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._channel: RobustChannel | None = None
        self._recorder: asyncio.Task[None] | None = None
        self._consuming = False

    @property
    def ready(self) -> bool:
        return self._consuming and self._channel is not None and not self._channel.is_closed

    async def start(self, connection: WireConnection) -> None:
        if self._recorder is None:
            self._recorder = asyncio.create_task(self._record_forever(), name="status-recorder")
        self._channel = await connection.open_channel(self._consume, on_lost=self._lost)

    async def close(self) -> None:
        if self._recorder is not None:
            self._recorder.cancel()
        await close_channels(self._channel)

    async def _consume(self, channel: Channel) -> None:
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

    # Both callbacks run inline as each message completes, so the inbox keeps the delivery order.
    def _on_live(self, message: Delivery) -> None:
        self._inbox.put_nowait(_Delivery(message, from_journal=False))

    def _on_journal(self, message: Delivery) -> None:
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
                _settle(batch, requeue=True)
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
                    await self._bury(delivery, f"undecodable status event: {exc}")
        stored = await self._store.record(events) if events else []
        kinds = {event.task_id: event.kind for event, _ in events}
        for event in stored:
            if isinstance(event, RejectedEvent):
                logger.warning("status event not recorded: %s", event.reason)
                continue
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
        _settle(batch, requeue=False)

    async def _bury(self, delivery: _Delivery, reason: str) -> None:
        """Move an unusable journal message to ``status.dead`` with the reason in a header.

        If that fails, the journal's own dead-lettering takes it (without the reason):
        it is never acked unburied, nor requeued to come back forever.
        """
        message = delivery.message
        buried = await self._publisher.dead_letter(
            message, STATUS_DEAD_QUEUE, reason, source_queue=STATUS_JOURNAL_QUEUE
        )
        if not buried:
            delivery.settled = True  # acking it too would close the channel (unknown tag)
            with contextlib.suppress(WireError):  # a closed channel: redelivered anyway
                message.channel.basic_nack(message.delivery_tag, requeue=False)


def _settle(batch: list[_Delivery], *, requeue: bool) -> None:
    """Ack (or nack with ``requeue``) the batch's journal deliveries on the channels they came on.

    The wire sends the acks of one loop turn as one ``multiple`` ack. A delivery
    whose channel has closed since is redelivered by the broker anyway.
    """
    for delivery in batch:
        if not delivery.from_journal or delivery.settled:
            continue
        message = delivery.message
        if not requeue:
            message.ack()
            continue
        with contextlib.suppress(WireError):
            message.channel.basic_nack(message.delivery_tag, requeue=True)
