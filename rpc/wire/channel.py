"""One AMQP channel: its state, batched acks, and the frames the broker sends it.

Its synchronous methods are in methods.py, publishing with confirms and returns
in publishing.py, the Delivery it hands to consumers in delivery.py.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pamqp import commands
from pamqp.base import Frame

from . import codec
from .delivery import Consumer, Delivery, ReturnHandler
from .errors import ChannelClosed, ChannelLost, ChannelOutOfStep, ConsumerCancelled
from .methods import SyncMethods
from .publishing import Publishing

if TYPE_CHECKING:
    from .protocol import AmqpProtocol

logger = logging.getLogger(__name__)

# The consumer tag a Basic.GetOk's message carries until it is complete.
_GET = "\0get"

__all__ = ["Channel", "Consumer", "Delivery", "ReturnHandler"]


class Channel(SyncMethods, Publishing):
    """A channel on an :class:`AmqpProtocol`; open it with ``await protocol.channel()``."""

    def __init__(self, protocol: AmqpProtocol, number: int) -> None:
        self.number = number
        self._protocol = protocol
        self._lock = asyncio.Lock()  # one synchronous method at a time
        self._waiter: asyncio.Future[Any] | None = None
        self._consumers: dict[str, Consumer] = {}
        self._next_consumer: Consumer | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.on_return: ReturnHandler | None = None
        self.close_callbacks: list[Callable[[Exception], None]] = []
        self.closed: Exception | None = None
        # Closed by us after it fell out of step: until the broker's CloseOk, whatever
        # else arrives belongs to the calls that were given up, and the number stays taken.
        self._closing = False
        # Publisher confirms.
        self._confirming = False
        self._published = 0
        # Publish sequence number -> its confirm and, if mandatory, its message_id.
        self._confirms: dict[int, tuple[asyncio.Future[bool], str | None]] = {}
        # message_id -> confirm of a mandatory publish, until confirmed (to match a return).
        self._mandatory: dict[str, asyncio.Future[bool]] = {}
        # Consumer acks: delivered and still unacked, and acked since the last write.
        self._unacked: set[int] = set()
        self._acks: list[int] = []
        # A content message being assembled from its frames.
        self._incoming: Delivery | None = None
        self._body_size = 0
        self._chunks: list[bytes] = []

    @property
    def is_closed(self) -> bool:
        return self.closed is not None

    # --- acknowledgements -----------------------------------------------------------------

    def basic_ack(self, delivery_tag: int) -> None:
        """Acknowledge a delivery. Acks collect until the next write, then go out as few frames."""
        self._unacked.discard(delivery_tag)
        self._acks.append(delivery_tag)
        self._protocol.flush_soon(self)

    def basic_nack(self, delivery_tag: int, *, requeue: bool) -> None:
        """Give a delivery back (``requeue``) or have its queue dead-letter it."""
        if self.closed is not None:
            raise self.closed
        self._unacked.discard(delivery_tag)
        self._protocol.send_frame(
            self.number, commands.Basic.Nack(delivery_tag=delivery_tag, requeue=requeue)
        )

    def take_ack_frames(self) -> list[bytes]:
        """The pending acks as frames: one ``multiple`` ack below the oldest unacked delivery."""
        acks, self._acks = self._acks, []
        if self.closed is not None:
            return []
        oldest_unacked = min(self._unacked) if self._unacked else None
        below = [t for t in acks if oldest_unacked is None or t < oldest_unacked]
        frames = []
        if below:
            frames.append(codec.ack_frame(self.number, max(below), len(below) > 1))
        if oldest_unacked is not None:
            frames += [codec.ack_frame(self.number, t, False) for t in acks if t > oldest_unacked]
        return frames

    # --- frames from the broker -----------------------------------------------------------

    def on_method(self, class_id: int, method_id: int, payload: memoryview) -> None:
        if self._closing:
            self._while_closing(self._protocol.unmarshal(payload))
        elif (class_id, method_id) == codec.BASIC_DELIVER:
            consumer_tag, tag, redelivered, exchange, routing_key = codec.decode_deliver(payload)
            self._incoming = Delivery(
                self,
                exchange,
                routing_key,
                consumer_tag=consumer_tag,
                delivery_tag=tag,
                redelivered=redelivered,
            )
        elif (class_id, method_id) in (codec.BASIC_ACK, codec.BASIC_NACK):
            tag, multiple = codec.decode_confirm(payload)
            self._on_confirm(tag, multiple, (class_id, method_id) == codec.BASIC_ACK)
        elif (class_id, method_id) == codec.BASIC_RETURN:
            code, text, exchange, routing_key = codec.decode_return(payload)
            self._incoming = Delivery(self, exchange, routing_key, reply_code=code, reply_text=text)
        else:
            self._on_other_method(self._protocol.unmarshal(payload))

    def on_header(self, payload: memoryview) -> None:
        if self._closing:
            return
        if self._incoming is None:
            raise ValueError("content header without a Deliver or Return")
        self._body_size, self._incoming.properties = codec.decode_header(payload)
        self._chunks = []
        if self._body_size == 0:
            self._complete()

    def on_body(self, payload: memoryview) -> None:
        if self._closing:
            return
        if self._incoming is None:
            raise ValueError("content body without a Deliver or Return")
        self._chunks.append(bytes(payload))
        self._body_size -= len(payload)
        if self._body_size <= 0:
            self._complete()

    def _complete(self) -> None:
        message, self._incoming = self._incoming, None
        assert message is not None
        chunks, self._chunks = self._chunks, []
        message.body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if message.reply_code:
            self._on_returned(message)
            return
        if message.consumer_tag == _GET:
            message.consumer_tag = ""
            if self._waiter is not None and not self._waiter.done():
                self._waiter.set_result(message)
            return
        consumer = self._consumers.get(message.consumer_tag)
        if consumer is None:
            logger.warning("delivery for unknown consumer %r", message.consumer_tag)
            return
        self._unacked.add(message.delivery_tag)
        try:
            result = consumer(message)
        except Exception as exc:
            # The consumer's own failure, not the channel's: it stays in step. The traceback
            # goes out as text, since its frames hold views of the receive buffer.
            logger.error("consumer failed\n%s", "".join(traceback.format_exception(exc)))
            return
        if result is not None:
            task = asyncio.ensure_future(result)
            self._tasks.add(task)
            task.add_done_callback(self._consumer_done)

    def _consumer_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("consumer failed", exc_info=task.exception())

    def _on_other_method(self, frame: Frame) -> None:
        if isinstance(frame, commands.Channel.Close):
            self._protocol.send_frame(self.number, commands.Channel.CloseOk())
            method = (frame.class_id or 0, frame.method_id or 0)
            self.lost(ChannelClosed(frame.reply_code or 0, frame.reply_text or "", method))
            return
        if isinstance(frame, commands.Channel.CloseOk):
            self.lost(ChannelLost("closed by the client"))
            return
        if isinstance(frame, commands.Basic.Cancel):
            # The broker cancelled a consumer (its queue was deleted): the channel is no
            # longer what its owner set up. Close it, telling the owner which consumer
            # went; a robust channel reopens and its set-up declares and consumes again.
            tag = frame.consumer_tag or ""
            logger.warning("channel %d: the broker cancelled consumer %r", self.number, tag)
            self._consumers.pop(tag, None)
            self._close_because(ConsumerCancelled(tag), "consumer cancelled by the broker")
            return
        if isinstance(frame, commands.Basic.GetOk):
            # Its content follows; basic_get's waiter gets the whole message (see _complete).
            self._incoming = Delivery(
                self,
                frame.exchange or "",
                frame.routing_key or "",
                consumer_tag=_GET,
                delivery_tag=frame.delivery_tag or 0,
                redelivered=bool(frame.redelivered),
            )
            return
        if isinstance(frame, commands.Basic.ConsumeOk) and self._next_consumer is not None:
            # Registered before the next frame is parsed: deliveries may follow at once.
            self._consumers[frame.consumer_tag or ""] = self._next_consumer
            self._next_consumer = None
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(frame)
        else:
            self.out_of_step(f"{frame.name} arrived with no call waiting")

    def out_of_step(self, reason: str) -> ChannelOutOfStep:
        """Close a channel whose replies no longer match its calls; the error, to raise."""
        error = ChannelOutOfStep(reason)
        if self.closed is None:
            logger.warning("channel %d: %s; closing it", self.number, error)
            self._close_because(error, "out of step")
        return error

    def _close_because(self, error: Exception, reply_text: str) -> None:
        """Close the channel now: ``error`` to everyone waiting; later frames are dropped."""
        self._closing = True
        close = commands.Channel.Close(
            reply_code=200, reply_text=reply_text, class_id=0, method_id=0
        )
        self._protocol.send_frame(self.number, close)
        self.lost(error)

    def _while_closing(self, frame: Frame) -> None:
        """A frame after our Close: only the end of the channel matters now."""
        if isinstance(frame, commands.Channel.Close):  # the broker closed it first
            self._protocol.send_frame(self.number, commands.Channel.CloseOk())
        elif not isinstance(frame, commands.Channel.CloseOk):
            return
        self._closing = False
        self._protocol.forget(self)

    def lost(self, error: Exception) -> None:
        """The channel is gone: fail everything waiting on it, tell its owner."""
        if self.closed is not None:
            return
        self.closed = error
        if not self._closing:
            self._protocol.forget(self)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(error)
        # The broker names the method it refused: a publish fails the publishes awaiting
        # a confirm; anything else (a declaration) answers the call in flight, and the
        # publishes only lost their channel and may try again on the reopened one.
        refused_other = isinstance(error, ChannelClosed) and error.method != codec.BASIC_PUBLISH
        others = ChannelLost(str(error)) if refused_other else error
        confirms, self._confirms = self._confirms, {}
        self._mandatory.clear()
        for future, _ in confirms.values():
            if not future.done():
                future.set_exception(others)
        for task in list(self._tasks):
            task.cancel()
        for callback in self.close_callbacks:
            try:
                callback(error)
            except Exception:
                logger.exception("channel close callback failed")
