"""Notifications: ``POST /notifications`` broadcasts, ``GET /notifications/stream`` listens.

A notification goes to the ``notifications`` fanout exchange; every gateway
process has one exclusive auto-delete queue bound to it, feeding a broadcast
hub that every open stream subscribes to. Notifications are ephemeral: a
client sees those sent while it is connected (there is no history to replay).
"""

from __future__ import annotations

import itertools
import logging
import time
import uuid
from collections.abc import AsyncGenerator
from typing import Annotated, Literal

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from rpc.connection import close_channels
from rpc.errors import BrokerUnavailable
from rpc.wire import Channel, Delivery, RobustChannel, WireConnection

from .auth import authenticate
from .bodies import decode_json, read_body
from .errors import unavailable
from .hub import Hub
from .limits import StreamLimiter
from .publisher import Publisher
from .settings import GatewaySettings
from .sse import EventStreamResponse, StreamEnd
from .store import StoredEvent

logger = logging.getLogger(__name__)

NOTIFICATIONS_EXCHANGE = "notifications"
# The hub key every notification stream subscribes to.
BROADCAST = ""


class Notification(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The body of ``POST /notifications``, and the JSON each stream receives (with its id)."""

    title: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    body: Annotated[str, msgspec.Meta(max_length=2_000)] = ""
    level: Literal["info", "success", "warning", "error"] = "info"
    notification_id: str = ""


_decoder = msgspec.json.Decoder(Notification)


async def _declare_exchange(channel: Channel) -> None:
    await channel.exchange_declare(NOTIFICATIONS_EXCHANGE, exchange_type="fanout", durable=True)


class NotificationFeed:
    """This process's queue on ``notifications``, handing each message to the hub."""

    def __init__(self, hub: Hub) -> None:
        self._hub = hub
        self._numbers = itertools.count(1)
        self._channel: RobustChannel | None = None

    async def start(self, connection: WireConnection) -> None:
        self._channel = await connection.open_channel(self._consume)

    async def close(self) -> None:
        await close_channels(self._channel)

    async def _consume(self, channel: Channel) -> None:
        await _declare_exchange(channel)
        declared = await channel.queue_declare("", exclusive=True, auto_delete=True)
        assert declared.queue is not None
        await channel.queue_bind(declared.queue, NOTIFICATIONS_EXCHANGE, routing_key="")
        await channel.basic_consume(declared.queue, self._on_message, no_ack=True, exclusive=True)

    def _on_message(self, message: Delivery) -> None:
        try:
            _decoder.decode(message.body)
        except msgspec.DecodeError:
            logger.warning("dropping an undecodable notification")
            return
        self._hub.publish(StoredEvent(BROADCAST, next(self._numbers), "notification", message.body))


async def send_notification(request: Request) -> JSONResponse:
    publisher: Publisher = request.app.state.publisher
    authenticate(request)
    if not publisher.ready:
        raise unavailable("not connected to the broker")
    notification = decode_json(await read_body(request), _decoder)
    notification = msgspec.structs.replace(notification, notification_id=uuid.uuid4().hex)
    try:
        await publisher.publish(
            msgspec.json.encode(notification),
            exchange=NOTIFICATIONS_EXCHANGE,
            routing_key="",
            message_id=notification.notification_id,
            message_type="notification",
            declare=_declare_exchange,
        )
    except BrokerUnavailable as exc:
        raise unavailable(str(exc)) from None
    return JSONResponse({"notification_id": notification.notification_id}, status_code=202)


async def notification_stream(request: Request) -> Response:
    user = authenticate(request)
    hub: Hub = request.app.state.notifications
    settings: GatewaySettings = request.app.state.settings
    limiter: StreamLimiter = request.app.state.stream_limiter
    end = StreamEnd()
    frames = _frames(hub, end, settings.sse_retry_ms, settings.sse_ping_s, user.expires_at)
    response = EventStreamResponse(frames, end=end, send_timeout_s=settings.sse_send_timeout_s)
    return limiter.limited(user.user_id, response)


async def _frames(
    hub: Hub, end: StreamEnd, retry_ms: int, ping_s: float, expires_at: float
) -> AsyncGenerator[bytes, None]:
    """Notifications as they come, until the hub ends the stream or the token expires."""
    with hub.subscribe(BROADCAST) as subscription:
        end.subscription = subscription
        if end.reason is not None:
            return
        yield b"retry: %d\n\n" % retry_ms
        while True:
            left_s = expires_at - time.time()
            if left_s <= 0:
                yield b": session expired\n\n"
                return
            await subscription.wait(timeout_s=min(ping_s, left_s))
            if subscription.ended is not None:
                yield b": %s, reconnect\nretry: %d\n\n" % (subscription.ended.encode(), retry_ms)
                return
            events = subscription.take()
            if not events:
                yield b": ping\n\n"
            for event in events:
                yield b"event: notification\ndata: %s\n\n" % event.body
