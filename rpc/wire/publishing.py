"""A channel's publishing: confirms matched to their publishes, returns to their mandatory ones."""

from __future__ import annotations

import asyncio
import itertools
import logging
import uuid
from typing import TYPE_CHECKING

from . import codec
from .codec import Properties
from .delivery import Delivery, ReturnHandler
from .errors import PublishBlocked, PublishNacked

if TYPE_CHECKING:
    from .protocol import AmqpProtocol

logger = logging.getLogger(__name__)


class Publishing:
    """``publish`` and ``basic_publish``, and what the broker answers them (confirms, returns)."""

    # Set by Channel.__init__.
    number: int
    closed: Exception | None
    on_return: ReturnHandler | None
    _protocol: AmqpProtocol
    _confirming: bool
    _published: int
    _confirms: dict[int, tuple[asyncio.Future[bool], str | None]]
    _mandatory: dict[str, asyncio.Future[bool]]

    def publish(
        self,
        body: bytes,
        *,
        exchange: str = "",
        routing_key: str,
        properties: Properties | None = None,
        mandatory: bool = False,
    ) -> asyncio.Future[bool] | None:
        """Queue a publish for the next write.

        On a confirming channel, returns a future: True once the broker has the
        message, False if it came back unroutable (``mandatory``); it fails with
        PublishNacked or the channel's error. Otherwise returns None; an unroutable
        mandatory message then reaches ``on_return``. It does not wait while the
        broker blocks publishers (see basic_publish): the frames queue up unread.

        The message carries the connection's user as ``user_id`` unless ``properties``
        name one: the broker checks it, so a consumer knows who sent what (workers/senders.py).
        """
        if self.closed is not None:
            raise self.closed
        if mandatory and self._confirming and not (properties and properties.message_id):
            # A return is matched to its publish by message_id.
            properties = properties.copy() if properties else Properties()
            properties.message_id = uuid.uuid4().hex
        protocol = self._protocol
        protocol.send_frames(
            codec.publish_frames(
                self.number,
                protocol.frame_max,
                body,
                exchange,
                routing_key,
                properties,
                mandatory,
                protocol.user_id,
            )
        )
        if not self._confirming:
            return None
        self._published += 1
        future: asyncio.Future[bool] = protocol.loop.create_future()
        message_id = properties.message_id if mandatory and properties else None
        self._confirms[self._published] = (future, message_id)
        if message_id:
            self._mandatory[message_id] = future
        return future

    async def basic_publish(
        self,
        body: bytes,
        *,
        exchange: str = "",
        routing_key: str,
        properties: Properties | None = None,
        mandatory: bool = False,
        blocked_timeout_s: float | None = None,
    ) -> bool | None:
        """Publish, waiting for the broker's confirm on a confirming channel (see publish).

        While the broker blocks publishers, waits for it to unblock first, at most
        ``blocked_timeout_s`` (then PublishBlocked); without it, the caller's own
        timeout bounds the wait (``blocked_reason`` then says why it ran out).
        """
        protocol = self._protocol
        if protocol.blocked_reason is not None:
            try:
                async with asyncio.timeout(blocked_timeout_s):
                    await protocol.unblocked()
            except TimeoutError:
                if protocol.blocked_reason is not None:  # else it unblocked in that turn
                    raise PublishBlocked(protocol.blocked_reason, blocked_timeout_s) from None
        await protocol.writable()
        future = self.publish(
            body,
            exchange=exchange,
            routing_key=routing_key,
            properties=properties,
            mandatory=mandatory,
        )
        if future is None:
            return None
        return await future

    @property
    def blocked_reason(self) -> str | None:
        """Why the broker blocks publishers on this channel's connection, or None."""
        return self._protocol.blocked_reason

    def _on_returned(self, message: Delivery) -> None:
        message_id = message.properties.message_id
        future = self._mandatory.pop(message_id, None) if message_id else None
        if future is not None:
            if not future.done():
                future.set_result(False)
        elif self.on_return is not None:
            self.on_return(message)
        else:
            logger.warning("unroutable message returned: %s", message.reply_text)

    def _on_confirm(self, tag: int, multiple: bool, acked: bool) -> None:
        # Sequence numbers are the dict's insertion order: a multiple confirm is a prefix.
        tags = [tag]
        if multiple:
            tags = list(itertools.takewhile(lambda t: t <= tag, self._confirms))
        for t in tags:
            entry = self._confirms.pop(t, None)
            if entry is None:
                continue
            future, message_id = entry
            if message_id:
                self._mandatory.pop(message_id, None)
            if future.done():
                continue
            if acked:
                future.set_result(True)
            else:
                future.set_exception(PublishNacked("the broker refused the message"))
