"""Notifications: ``POST /notifications`` sends, ``GET /notifications/stream`` listens.

A notification goes to one user (``"to": "<user id>"``) or to everyone
(``"to": "*"``). Anyone may notify themselves: the default, reaching their
other tabs and devices (a script telling its user that a batch is done). Only
an admin (``Claims.admin``: the ``roles`` claim of the token) may notify
another user or everyone: a notification is shown by the page as the
gateway's word, so letting any user write into another's list would make the
gateway a phishing channel. Every notification names its ``sender`` (the
authenticated user, never a field of the request), and each user may send
``NOTIFICATION_BURST`` at once, then ``NOTIFICATIONS_PER_MINUTE``.

Notifications travel on the ``notifications`` fanout exchange; every gateway
process has one exclusive auto-delete queue bound to it, feeding a hub keyed by
recipient. They are ephemeral: a client sees those sent while it is connected.
Only what a gateway published is taken (``user_id``, workers/senders.py).
The same exchange carries ``session.ended`` messages: a sign-out on one web
process ends the session's streams on all of them (``gateway.sessions``).
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
from workers.senders import gateway_senders

from .auth import authenticate, end_with_session
from .bodies import decode_json, read_body
from .errors import HttpError, unavailable
from .hub import Hub
from .limits import StreamLimiter
from .openapi import Media, documented
from .publisher import Publisher
from .rate_limit import RateLimiter
from .sessions import Sessions
from .settings import GatewaySettings
from .sse import EventStreamResponse, StreamEnd
from .store import StoredEvent

logger = logging.getLogger(__name__)

NOTIFICATIONS_EXCHANGE = "notifications"
EVERYONE = "*"
NOTIFICATION_TYPE = "notification"
SESSION_ENDED_TYPE = "session.ended"

UserId = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class NotificationRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The body of ``POST /notifications``."""

    title: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    body: Annotated[str, msgspec.Meta(max_length=2_000)] = ""
    level: Literal["info", "success", "warning", "error"] = "info"
    # A user id, or "*" for everyone; the sender by default.
    to: UserId | None = None


class NotificationSent(msgspec.Struct, frozen=True):
    notification_id: str
    to: str


class Notification(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A notification as it travels and as each stream receives it."""

    notification_id: str
    title: str
    body: str
    level: str
    sender: str
    to: str


class SessionEnded(msgspec.Struct, frozen=True):
    session: str


_request_decoder = msgspec.json.Decoder(NotificationRequest)
_decoder = msgspec.json.Decoder(Notification)
_ended_decoder = msgspec.json.Decoder(SessionEnded)


async def _declare_exchange(channel: Channel) -> None:
    await channel.exchange_declare(NOTIFICATIONS_EXCHANGE, exchange_type="fanout", durable=True)


class NotificationHub(Hub):
    """The hub keyed by recipient, with broadcasts to every recipient."""

    def publish_to_everyone(self, event: StoredEvent) -> None:
        for user_id in list(self._by_task):
            self.publish(StoredEvent(user_id, event.seq, event.state, event.body))


class NotificationFeed:
    """This process's queue on ``notifications``, handing each message to the hub (or, for a
    sign-out, to the sessions)."""

    def __init__(self, hub: NotificationHub, sessions: Sessions) -> None:
        self._hub = hub
        self._sessions = sessions
        self._numbers = itertools.count(1)
        self._channel: RobustChannel | None = None
        self._senders = gateway_senders(None)

    async def start(self, connection: WireConnection) -> None:
        self._senders = gateway_senders(connection.user_id)
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
        refused = self._senders.refusal(message.properties)
        if refused is not None:
            # A forged notification would speak as the gateway; a forged sign-out end streams.
            logger.warning("dropping a notification: %s", refused)
            return
        try:
            if message.properties.message_type == SESSION_ENDED_TYPE:
                self._sessions.ended(_ended_decoder.decode(message.body).session)
                return
            notification = _decoder.decode(message.body)
        except msgspec.DecodeError:
            logger.warning("dropping an undecodable notification")
            return
        event = StoredEvent(notification.to, next(self._numbers), "notification", message.body)
        if notification.to == EVERYONE:
            self._hub.publish_to_everyone(event)
        else:
            self._hub.publish(event)


async def announce_sign_out(publisher: Publisher, session_key: str) -> None:
    """Tell every web process that the session ``session_key`` ended."""
    if not publisher.ready:
        raise BrokerUnavailable("not connected to the broker")
    await publisher.publish(
        msgspec.json.encode(SessionEnded(session_key)),
        exchange=NOTIFICATIONS_EXCHANGE,
        routing_key="",
        message_id=uuid.uuid4().hex,
        message_type=SESSION_ENDED_TYPE,
        declare=_declare_exchange,
    )


@documented(
    "Notify yourself (an admin: anyone, or everyone)",
    responses={202: NotificationSent},
    body=NotificationRequest,
    errors=(403, 429),
)
async def send_notification(request: Request) -> JSONResponse:
    user = authenticate(request)
    publisher: Publisher = request.app.state.publisher
    limiter: RateLimiter = request.app.state.notification_limiter
    sent = decode_json(await read_body(request), _request_decoder)
    to = sent.to or user.user_id
    # A user whose id happens to be "*" notifies themselves only: "*" is everyone.
    if (to != user.user_id or to == EVERYONE) and not user.admin:
        raise HttpError(
            403, "forbidden", "only an admin may notify other users or everyone", path="$.to"
        )
    limiter.take(user.user_id, "notifications")
    if not publisher.ready:
        raise unavailable("not connected to the broker")
    notification = Notification(
        notification_id=uuid.uuid4().hex,
        title=sent.title,
        body=sent.body,
        level=sent.level,
        sender=user.user_id,
        to=to,
    )
    try:
        await publisher.publish(
            msgspec.json.encode(notification),
            exchange=NOTIFICATIONS_EXCHANGE,
            routing_key="",
            message_id=notification.notification_id,
            message_type=NOTIFICATION_TYPE,
            declare=_declare_exchange,
        )
    except BrokerUnavailable as exc:
        raise unavailable(str(exc)) from None
    sent_view = NotificationSent(notification_id=notification.notification_id, to=to)
    return JSONResponse(msgspec.to_builtins(sent_view), status_code=202)


@documented(
    "The caller's notifications as they come (SSE)",
    responses={200: Media("text/event-stream", "One SSE message per notification")},
    errors=(429,),
)
async def notification_stream(request: Request) -> Response:
    user = authenticate(request)
    hub: NotificationHub = request.app.state.notifications
    settings: GatewaySettings = request.app.state.settings
    limiter: StreamLimiter = request.app.state.stream_limiter
    end = StreamEnd()
    end_with_session(request, end)
    frames = _frames(
        hub, user.user_id, end, settings.sse_retry_ms, settings.sse_ping_s, user.expires_at
    )
    response = EventStreamResponse(frames, end=end, send_timeout_s=settings.sse_send_timeout_s)
    return limiter.limited(user.user_id, response)


async def _frames(
    hub: Hub, user_id: str, end: StreamEnd, retry_ms: int, ping_s: float, expires_at: float
) -> AsyncGenerator[bytes, None]:
    """``user_id``'s notifications as they come, until the hub or a sign-out ends the
    stream or the token expires."""
    with hub.subscribe(user_id) as subscription:
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
