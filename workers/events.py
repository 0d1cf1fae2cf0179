"""Consumers of domain events (``order.created`` and the like), each on its own durable queue.

A :class:`Subscriber` names a queue, the exchange and routing key it binds,
and a handler. The queue is a quorum queue that dead-letters to
``<queue>.dead``. A message is acked after its handler returns; a
``PermanentError`` (an undecodable message, a refusal no retry can fix) moves
it to the dead queue with the reason in a header, and any other exception
returns it to the queue, so the broker redelivers it, up to ``DELIVERY_LIMIT``
deliveries before it buries it. Handlers must therefore be idempotent. A
message from anyone but the subscriber's ``senders`` (``user_id``,
workers/senders.py) goes to the dead queue unread.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from infra.logs import log_context
from rpc.connection import cancel_consumers, close_channels
from rpc.dead_letter import dead_letter
from rpc.errors import BrokerRefused, BrokerUnavailable
from rpc.wire import BrokerError, Channel, Delivery, RobustChannel, Unavailable, WireConnection

from .deliveries import describe, nack_requeue, traceback_summary
from .errors import PermanentError, UntrustedSender
from .messages import StatusEvent
from .metrics import EVENTS_CONSUMED
from .senders import WEB, Senders
from .status import publish_status
from .topology import DEFAULT_STATUS_SHARDS, declare_event_queue, declare_status

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class EventContext:
    """What a handler gets besides the message body."""

    redelivered: bool
    publish_status: Callable[[StatusEvent], Awaitable[None]]


Handler = Callable[[bytes, EventContext], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Subscriber:
    """A durable queue ``queue`` bound to ``exchange`` with ``routing_key``, and its handler."""

    queue: str
    exchange: str
    routing_key: str
    handle: Handler
    exchange_type: str = "topic"
    # The roles whose messages it takes (workers/senders.py): the gateway publishes events.
    senders: tuple[str, ...] = (WEB,)

    @property
    def dead_queue(self) -> str:
        return f"{self.queue}.dead"


class EventConsumers:
    """Runs subscribers; ``await start(connection)``, later ``await stop()``."""

    def __init__(
        self,
        subscribers: Sequence[Subscriber],
        *,
        prefetch: int = 16,
        status_shards: int = DEFAULT_STATUS_SHARDS,
    ) -> None:
        self._subscribers = tuple(subscribers)
        self._status_shards = status_shards
        self._prefetch = prefetch
        self._publish_channel: RobustChannel | None = None
        self._consume_channel: RobustChannel | None = None
        self._raw: Channel | None = None
        self._tags: list[str] = []
        self._running: set[asyncio.Task[Any]] = set()
        self._stopping = False
        self._senders: dict[str, Senders] = {}

    async def start(self, connection: WireConnection) -> None:
        self._senders = {s.queue: Senders(s.senders, connection.user_id) for s in self._subscribers}
        try:
            self._publish_channel = await connection.open_channel(
                functools.partial(declare_status, shards=self._status_shards),
                publisher_confirms=True,
            )
            self._consume_channel = await connection.open_channel(self._consume)
        except Unavailable as exc:
            raise BrokerUnavailable(f"cannot open the consumers' channels: {exc}") from exc
        except BrokerError as exc:  # a declaration or a permission: configuration
            raise BrokerRefused(exc.code, exc.text) from exc
        logger.info("consuming %s", ", ".join(s.queue for s in self._subscribers))

    async def stop(self, grace_s: float) -> None:
        """Stop consuming; let handlers in flight finish within ``grace_s``, return the rest."""
        self._stopping = True
        await cancel_consumers(self._raw, self._tags)
        if self._running:
            _, pending = await asyncio.wait(self._running, timeout=grace_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await close_channels(self._consume_channel, self._publish_channel)

    async def publish_status(self, event: StatusEvent) -> None:
        if self._publish_channel is None:
            raise BrokerUnavailable("the consumers are not started")
        await publish_status(self._publish_channel, event)

    async def _consume(self, channel: Channel) -> None:
        """Declare and consume every subscriber's queue; runs again after each reconnect."""
        if self._stopping:
            return
        await channel.basic_qos(prefetch_count=self._prefetch)
        tags = []
        for subscriber in self._subscribers:
            await declare_subscriber(channel, subscriber)
            tags.append(
                await channel.basic_consume(subscriber.queue, self._make_consumer(subscriber))
            )
        self._raw, self._tags = channel, tags

    def _make_consumer(self, subscriber: Subscriber) -> Callable[[Delivery], Any]:
        async def consume(message: Delivery) -> None:
            task = asyncio.current_task()
            assert task is not None
            self._running.add(task)
            try:
                await self._process(subscriber, message)
            finally:
                self._running.discard(task)

        return consume

    async def _process(self, subscriber: Subscriber, message: Delivery) -> None:
        context = EventContext(redelivered=message.redelivered, publish_status=self.publish_status)
        message_id = message.properties.message_id or ""
        with log_context(queue=subscriber.queue, message_id=message_id):
            refused = self._senders[subscriber.queue].refusal(message.properties)
            try:
                if refused is not None:
                    raise UntrustedSender(refused)
                await subscriber.handle(message.body, context)
            except PermanentError as exc:
                buried = await self._dead_letter(subscriber, message, exc)
                EVENTS_CONSUMED.labels(subscriber.queue, "dead" if buried else "retry").inc()
            except Exception:
                logger.exception("%s failed; the message goes back to its queue", subscriber.queue)
                nack_requeue(message)
                EVENTS_CONSUMED.labels(subscriber.queue, "retry").inc()
            else:
                message.ack()
                EVENTS_CONSUMED.labels(subscriber.queue, "ok").inc()

    async def _dead_letter(
        self, subscriber: Subscriber, message: Delivery, exc: BaseException
    ) -> bool:
        """Move the message to the subscriber's dead queue; back to its queue if that fails."""
        assert self._publish_channel is not None
        buried = await dead_letter(
            self._publish_channel,
            message,
            subscriber.dead_queue,
            describe(exc),
            source_queue=subscriber.queue,
            traceback=traceback_summary(exc),
        )
        if buried:
            message.ack()
        else:
            nack_requeue(message)
        return buried


async def declare_subscriber(channel: Channel, subscriber: Subscriber) -> None:
    """The subscriber's exchange, its quorum queue (dead-lettering to ``.dead``) and binding."""
    await declare_event_queue(
        channel,
        subscriber.queue,
        exchange=subscriber.exchange,
        routing_key=subscriber.routing_key,
        exchange_type=subscriber.exchange_type,
    )
