"""Publishing from the gateway: confirmed, bounded in time, on one channel per process.

Every publish returns once the broker has the message, or raises
BrokerUnavailable within its bound: the broker is down, refused it (a full
queue nacks), returned it unroutable (``Unroutable``), or did not confirm in
time. Tasks and orders are not published by handlers but by the outbox relay
(``publish_entry``), which waits longer and retries; other handlers answer
BrokerUnavailable with a 503. BrokerRefused is the broker closing the channel
over a declaration (406: the queue exists with other arguments) or a permission
(403): a configuration error, answered with a 500 that names it (gateway/errors.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from rpc.connection import close_channels
from rpc.dead_letter import Message, dead_letter
from rpc.errors import BrokerRefused, BrokerUnavailable
from rpc.publish import publish_confirmed
from rpc.wire import (
    BrokerError,
    Channel,
    Properties,
    PublishBlocked,
    RobustChannel,
    Unavailable,
    WireConnection,
)
from workers.shop.contracts import ORDER_CREATED, ORDER_QUEUES, ORDERS_EXCHANGE
from workers.topology import TASKS_EXCHANGE, declare_event_queue, declare_kind, task_kind

from .outbox import OutboxEntry

# Declares what a publish needs on first use (once per channel).
Declare = Callable[[Channel], Awaitable[None]]


class Unroutable(BrokerUnavailable):
    """A mandatory message came back: no queue is bound for its routing key (yet)."""


class Publisher:
    """The gateway's confirming channel; create, then ``await start(connection)``."""

    def __init__(self, *, queue_max_length: int, timeout_s: float) -> None:
        self._queue_max_length = queue_max_length
        self._timeout_s = timeout_s
        self._declared: set[str] = set()
        self._declaring: dict[str, asyncio.Task[None]] = {}
        self._channel: RobustChannel | None = None
        self._started = asyncio.Event()

    @property
    def ready(self) -> bool:
        return self._channel is not None and not self._channel.is_closed

    @property
    def can_publish(self) -> bool:
        """True while the channel is open now (not reopening after a lost connection) and the
        broker does not block publishers (a memory or disk alarm)."""
        channel = self._channel
        return (
            channel is not None
            and not channel.is_closed
            and channel.raw is not None
            and not channel.raw.is_closed
            and channel.raw.blocked_reason is None
        )

    async def start(self, connection: WireConnection) -> None:
        self._channel = await connection.open_channel(self._reset, publisher_confirms=True)
        self._started.set()

    async def close(self) -> None:
        for declaring in self._declaring.values():
            declaring.cancel()
        await close_channels(self._channel)

    async def declare_kind(self, kind: str) -> None:
        """Declare ``kind``'s task queue on this channel (once per connection), waiting for it
        up to the bound; BrokerRefused (406) if it exists with other arguments.

        Past the bound this returns and the declaration goes on: cancelling a declaration
        in flight would close the channel, and with it every publish waiting for a confirm.
        """
        key = f"kind:{kind}"
        if key in self._declared:
            return
        declaring = self._declaring.get(key)
        if declaring is None or declaring.done():
            declaring = asyncio.create_task(self._declare_now(key, kind))
            declaring.add_done_callback(_forget_error)
            self._declaring[key] = declaring
        await asyncio.wait({declaring}, timeout=self._timeout_s)
        if declaring.done():
            declaring.result()

    async def _declare_now(self, key: str, kind: str) -> None:
        try:
            await self._ready_channel(key, self._kind_declarer(kind))
        except PublishBlocked as exc:
            raise BrokerUnavailable(str(exc)) from exc
        except Unavailable as exc:
            raise BrokerUnavailable(f"lost the broker while declaring {kind!r}: {exc}") from exc
        except BrokerError as exc:
            raise BrokerRefused(exc.code, exc.text) from exc

    async def publish_entry(self, entry: OutboxEntry, *, timeout_s: float) -> None:
        """Publish an outbox entry persistent, confirmed and mandatory within ``timeout_s``.

        Declares first what its exchange needs: a task kind's queue, the order consumers'
        queues. Raises Unroutable if it came back, BrokerUnavailable, BrokerRefused.
        """
        key, declare = self._entry_declarer(entry)
        await self.publish(
            entry.body,
            exchange=entry.exchange,
            routing_key=entry.routing_key,
            message_id=entry.message_id,
            message_type=entry.message_type,
            declare=declare,
            declare_key=key,
            mandatory=True,
            headers=entry.headers,
            timestamp=datetime.fromtimestamp(entry.created_at, UTC),
            timeout_s=timeout_s,
        )

    def _kind_declarer(self, kind: str) -> Declare:
        async def declare(raw: Channel) -> None:
            await declare_kind(raw, kind, max_length=self._queue_max_length)

        return declare

    def _entry_declarer(self, entry: OutboxEntry) -> tuple[str, Declare]:
        if entry.exchange == TASKS_EXCHANGE:
            kind = task_kind(entry.routing_key)
            return f"kind:{kind}", self._kind_declarer(kind)
        if entry.exchange == ORDERS_EXCHANGE:
            return f"exchange:{ORDERS_EXCHANGE}", _declare_order_queues
        return f"exchange:{entry.exchange}", _declare_nothing

    async def probe(self) -> None:
        """A confirmed round trip on this channel within the bound, or BrokerUnavailable.

        An empty transient message to the default exchange for a queue that does not
        exist: the broker drops it and confirms at once, unless it is down or paused.
        While it blocks publishers this raises PublishBlocked at once (``_open_channel``).
        """
        channel = self._open_channel()
        async with _confirmed_within(self._timeout_s):
            await publish_confirmed(
                channel,
                b"",
                exchange="",
                routing_key="taskgate.readyz-probe",
                properties=Properties(delivery_mode=1),
            )

    async def publish(
        self,
        body: bytes,
        *,
        exchange: str,
        routing_key: str,
        message_id: str,
        message_type: str,
        declare: Declare,
        declare_key: str | None = None,
        mandatory: bool = False,
        headers: dict[str, Any] | None = None,
        timestamp: datetime | None = None,
        timeout_s: float | None = None,
    ) -> None:
        """Publish a persistent JSON message; ``declare`` sets up ``exchange`` on first use."""
        properties = Properties(
            content_type="application/json",
            message_id=message_id,
            message_type=message_type,
            timestamp=timestamp or datetime.now(UTC),
            delivery_mode=2,
            headers=headers,
        )
        async with _confirmed_within(timeout_s or self._timeout_s):
            channel = await self._ready_channel(declare_key or f"exchange:{exchange}", declare)
            routed = await publish_confirmed(
                channel,
                body,
                exchange=exchange,
                routing_key=routing_key,
                properties=properties,
                mandatory=mandatory,
            )
        if not routed:
            raise Unroutable(
                f"nothing consumes {routing_key!r} yet: "
                f"no queue is bound to {exchange!r} for {routing_key!r}"
            )

    async def dead_letter(
        self, message: Message, queue: str, reason: str, *, source_queue: str
    ) -> bool:
        """Copy ``message`` to ``queue`` with ``reason`` (rpc.dead_letter); True once confirmed.

        The status feed starts consuming before this publisher connects: a poison
        message met then waits (within the timeout) for it rather than losing its reason.
        """
        try:
            async with _confirmed_within(self._timeout_s):
                await self._started.wait()
                channel = self._channel
                if channel is None or channel.is_closed:
                    return False
                return await dead_letter(channel, message, queue, reason, source_queue=source_queue)
        except BrokerUnavailable:
            return False

    def _open_channel(self) -> RobustChannel:
        """The channel, if a publish on it could be confirmed now.

        While the broker blocks publishers (a memory or disk alarm) that is PublishBlocked
        at once: a publish would only be held back until the alarm clears, and its
        caller answered 503 after the whole timeout.
        """
        channel = self._channel
        if channel is None or channel.is_closed:
            raise BrokerUnavailable("not connected to the broker")
        if channel.raw is not None and channel.raw.blocked_reason is not None:
            raise PublishBlocked(channel.raw.blocked_reason)
        return channel

    async def _ready_channel(self, key: str, declare: Declare) -> RobustChannel:
        channel = self._open_channel()
        if key not in self._declared:
            await declare(await channel.get_underlay_channel())
            self._declared.add(key)
        return channel

    async def _reset(self, channel: Channel) -> None:
        # After a reconnect the broker may have lost non-durable state: declare again.
        self._declared.clear()


def _forget_error(task: asyncio.Task[None]) -> None:
    # Retrieved here so that a declaration nobody waited for to the end logs no
    # "exception was never retrieved"; whoever still waits gets it from result().
    if not task.cancelled():
        task.exception()


async def _declare_order_queues(channel: Channel) -> None:
    # The consumers' queues exist before the first order, even if no worker ever ran.
    for queue in ORDER_QUEUES:
        await declare_event_queue(
            channel, queue, exchange=ORDERS_EXCHANGE, routing_key=ORDER_CREATED
        )


async def _declare_nothing(channel: Channel) -> None:
    pass


@contextlib.asynccontextmanager
async def _confirmed_within(timeout_s: float) -> AsyncIterator[None]:
    """The broker's confirm within ``timeout_s``, or BrokerUnavailable (or BrokerRefused)."""
    try:
        async with asyncio.timeout(timeout_s):
            yield
    except TimeoutError:
        raise BrokerUnavailable(f"the broker did not confirm within {timeout_s} s") from None
    except PublishBlocked as exc:
        raise BrokerUnavailable(str(exc)) from exc
    except Unavailable as exc:
        raise BrokerUnavailable(f"lost the broker while publishing: {exc}") from exc
    except BrokerError as exc:
        raise BrokerRefused(exc.code, exc.text) from exc
