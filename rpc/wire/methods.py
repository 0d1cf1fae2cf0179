"""A channel's synchronous methods: one request at a time, each answered by its reply frame."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from pamqp import commands
from pamqp.base import Frame

from .delivery import Consumer, Delivery
from .errors import ChannelLost, ChannelOutOfStep, WireError

if TYPE_CHECKING:
    from .protocol import AmqpProtocol


class SyncMethods:
    """Declarations, consumers, gets and close: what :class:`Channel` sends and awaits."""

    # Set by Channel.__init__.
    number: int
    closed: Exception | None
    _protocol: AmqpProtocol
    _lock: asyncio.Lock
    _waiter: asyncio.Future[Any] | None
    _consumers: dict[str, Consumer]
    _next_consumer: Consumer | None
    _confirming: bool
    _unacked: set[int]
    _acks: list[int]

    if TYPE_CHECKING:

        def take_ack_frames(self) -> list[bytes]: ...

        def lost(self, error: Exception) -> None: ...

        def out_of_step(self, reason: str) -> ChannelOutOfStep: ...

    async def _call(self, frame: Frame, *replies: type) -> Any:
        """Send ``frame`` and return its reply, which must be one of ``replies``.

        Replies come in the order of the calls, so a call that goes without its reply
        (cancelled, timed out) or gets another one leaves the channel out of step: the
        next call would take the wrong reply (a cancelled ``queue_declare("a")`` made
        the next ``queue_declare("")`` return "a"). Such a channel is closed at once,
        and its owner (the robust channel) opens a new one and replays its set-up.
        """
        if self.closed is not None:
            raise self.closed
        async with self._lock:
            if self.closed is not None:
                raise self.closed
            self._waiter = self._protocol.loop.create_future()
            if self._acks:
                # Acks wait for the next write, but must not land after a Close or Cancel.
                self._protocol.send_frames(self.take_ack_frames())
            self._protocol.send_frame(self.number, frame)
            try:
                reply = await self._waiter
            except asyncio.CancelledError:
                self.out_of_step(f"{frame.name} was cancelled before its reply")
                raise
            finally:
                self._waiter = None
            if not isinstance(reply, replies):
                raise self.out_of_step(f"{frame.name} was answered by {reply!r}")
            return reply

    async def open(self) -> None:
        await self._call(commands.Channel.Open(), commands.Channel.OpenOk)

    async def confirm_select(self) -> None:
        await self._call(commands.Confirm.Select(), commands.Confirm.SelectOk)
        self._confirming = True

    async def basic_qos(self, prefetch_count: int) -> None:
        await self._call(commands.Basic.Qos(prefetch_count=prefetch_count), commands.Basic.QosOk)

    async def exchange_declare(
        self,
        exchange: str,
        exchange_type: str = "direct",
        *,
        durable: bool = False,
        auto_delete: bool = False,
        internal: bool = False,
        arguments: dict[str, Any] | None = None,
    ) -> None:
        """Declare an exchange (``internal``: reached through exchange bindings only)."""
        await self._call(
            commands.Exchange.Declare(
                exchange=exchange,
                exchange_type=exchange_type,
                durable=durable,
                auto_delete=auto_delete,
                internal=internal,
                arguments=arguments,
            ),
            commands.Exchange.DeclareOk,
        )

    async def exchange_bind(self, destination: str, source: str, routing_key: str = "") -> None:
        """Route what ``source`` routes for ``routing_key`` to the exchange ``destination`` too."""
        await self._call(
            commands.Exchange.Bind(destination=destination, source=source, routing_key=routing_key),
            commands.Exchange.BindOk,
        )

    async def queue_declare(
        self,
        queue: str = "",
        *,
        durable: bool = False,
        exclusive: bool = False,
        auto_delete: bool = False,
        arguments: dict[str, Any] | None = None,
        passive: bool = False,
    ) -> commands.Queue.DeclareOk:
        """Declare a queue (``passive``: check it exists; a missing one closes the channel, 404)."""
        ok: commands.Queue.DeclareOk = await self._call(
            commands.Queue.Declare(
                queue=queue,
                passive=passive,
                durable=durable,
                exclusive=exclusive,
                auto_delete=auto_delete,
                arguments=arguments,
            ),
            commands.Queue.DeclareOk,
        )
        return ok

    async def queue_bind(self, queue: str, exchange: str, routing_key: str = "") -> None:
        await self._call(
            commands.Queue.Bind(queue=queue, exchange=exchange, routing_key=routing_key),
            commands.Queue.BindOk,
        )

    async def basic_consume(
        self, queue: str, consumer: Consumer, *, no_ack: bool = False, exclusive: bool = False
    ) -> str:
        """Start ``consumer`` on ``queue``; returns the consumer tag.

        A consumer returning an awaitable runs as a task; a plain function runs inline.
        """
        if no_ack:
            consumer = _settled_by_broker(consumer, self._unacked)
        self._next_consumer = consumer
        ok: commands.Basic.ConsumeOk = await self._call(
            commands.Basic.Consume(queue=queue, no_ack=no_ack, exclusive=exclusive),
            commands.Basic.ConsumeOk,
        )
        assert ok.consumer_tag is not None
        return ok.consumer_tag

    async def queue_delete(
        self, queue: str, *, if_unused: bool = False, if_empty: bool = False
    ) -> int:
        """Delete ``queue``; returns how many messages it held. Its consumers are cancelled."""
        ok: commands.Queue.DeleteOk = await self._call(
            commands.Queue.Delete(queue=queue, if_unused=if_unused, if_empty=if_empty),
            commands.Queue.DeleteOk,
        )
        return ok.message_count or 0

    async def queue_purge(self, queue: str) -> None:
        await self._call(commands.Queue.Purge(queue=queue), commands.Queue.PurgeOk)

    async def basic_get(self, queue: str, *, no_ack: bool = False) -> Delivery | None:
        """One message from ``queue``, or None if it is empty."""
        reply = await self._call(
            commands.Basic.Get(queue=queue, no_ack=no_ack), Delivery, commands.Basic.GetEmpty
        )
        if not isinstance(reply, Delivery):
            return None
        if not no_ack:
            self._unacked.add(reply.delivery_tag)
        return reply

    async def basic_cancel(self, consumer_tag: str) -> None:
        await self._call(commands.Basic.Cancel(consumer_tag=consumer_tag), commands.Basic.CancelOk)
        self._consumers.pop(consumer_tag, None)

    async def close(self) -> None:
        """Close the channel; the deliveries it had unacked go back to their queues."""
        if self.closed is not None:
            return
        try:
            await self._call(
                commands.Channel.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0),
                commands.Channel.CloseOk,
            )
        except WireError:
            pass
        self.lost(ChannelLost("closed by the client"))


def _settled_by_broker(consumer: Consumer, unacked: set[int]) -> Consumer:
    """``consumer`` for a no-ack subscription: the broker counts its deliveries as acked.

    Left in ``unacked``, they would stay the oldest unacked delivery for ever (a leak,
    and every later ack on the channel would go out as its own frame).
    """

    def settled(delivery: Delivery) -> Awaitable[None] | None:
        unacked.discard(delivery.delivery_tag)
        return consumer(delivery)

    return settled
