"""The RPC server: handlers registered by method name, one queue per method.

Every request gets exactly one answer: the handler's result, or an error reply
for a malformed body, a failed validation, an unknown method or a handler
exception. A request that cannot be answered (no ``reply_to``, or one that
names no reply queue) is dead-lettered to ``rpc.dead`` with the reason in a header.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar, get_type_hints

import msgspec

from infra.logs import log_context

from . import codec
from .connection import cancel_consumers, close_channels
from .dead_letter import dead_letter
from .errors import ServiceError
from .latency import MethodStats
from .metrics import SERVER_SECONDS
from .topology import DEAD_EXCHANGE, DEAD_QUEUE, QueueType, method_queue, queue_options
from .wire import Channel, Delivery, Properties, RobustChannel, WireConnection, WireError

logger = logging.getLogger(__name__)

# Where a reply may go: direct reply-to, or a queue the broker named (a client's exclusive
# reply queue; clients cannot declare names under "amq."). Any other reply_to would make
# the server a confused deputy, writing into a queue of the caller's choosing with the
# server's own broker permissions (a task queue, the status journal).
REPLY_QUEUE_PREFIXES = ("amq.rabbitmq.reply-to", "amq.gen-")


def is_reply_queue(reply_to: str) -> bool:
    return reply_to.startswith(REPLY_QUEUE_PREFIXES)


Handler = Callable[..., Awaitable[Any]]
H = TypeVar("H", bound=Handler)


@dataclass(frozen=True, slots=True)
class _Method:
    name: str
    handler: Handler
    # None: the handler takes no argument; otherwise decodes the request body.
    decoder: msgspec.json.Decoder[Any] | None


class RpcServer:
    """Serves registered methods; run it with ``python -m rpc module:server``."""

    def __init__(self, name: str = "rpc") -> None:
        self.name = name
        self._methods: dict[str, _Method] = {}
        self._channel: RobustChannel | None = None
        self._dead_channel: RobustChannel | None = None
        self._raw: Channel | None = None
        self._consumer_tags: list[str] = []
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._semaphore: asyncio.Semaphore | None = None
        self._prefetch = 0
        self._queue_type: QueueType = "classic"
        self._stopping = False
        # The last 15 minutes' calls, for this server's presence heartbeat (the admin page).
        self.stats = MethodStats()

        @self.method("system.ping")
        async def ping() -> dict[str, Any]:
            return {"pong": True, "server": self.name, "time": time.time()}

    @property
    def methods(self) -> list[str]:
        """Names of the registered methods."""
        return sorted(self._methods)

    def method(self, name: str) -> Callable[[H], H]:
        """Register an async handler for ``name``.

        The handler takes no argument, or one whose annotation (a msgspec Struct,
        dict, or any msgspec-decodable type) the request body is validated against.
        """

        def register(handler: H) -> H:
            is_async = inspect.iscoroutinefunction(handler)
            if not is_async:
                raise TypeError(f"RPC handler for {name!r} must be an async function")
            if name in self._methods:
                raise ValueError(f"RPC method {name!r} is registered twice")
            self._methods[name] = _Method(name, handler, _request_decoder(handler))
            return handler

        return register

    async def start(
        self,
        connection: WireConnection,
        *,
        prefetch: int = 256,
        concurrency: int = 128,
        queue_type: QueueType = "classic",
    ) -> None:
        """Declare the method queues (and rpc.dead) as ``queue_type`` and start consuming."""
        self._prefetch = prefetch
        self._semaphore = asyncio.Semaphore(concurrency)
        self._stopping = False
        self._queue_type = queue_type
        self._dead_channel = await connection.open_channel(
            functools.partial(_declare_dead_letters, queue_type=queue_type),
            publisher_confirms=True,
        )
        self._channel = await connection.open_channel(self._consume)
        logger.info("RPC server %r serving %s", self.name, ", ".join(self.methods))

    async def stop(self, grace_s: float = 30.0) -> None:
        """Stop consuming, let the calls in flight finish (up to ``grace_s``), close."""
        self._stopping = True
        await cancel_consumers(self._raw, self._consumer_tags)
        try:
            await asyncio.wait_for(self._idle.wait(), grace_s)
        except TimeoutError:
            logger.warning(
                "%d RPC calls still running after %s s; closing", self._in_flight, grace_s
            )
        await close_channels(self._channel, self._dead_channel)

    async def _consume(self, channel: Channel) -> None:
        """Declare and consume every method queue; runs again after each reconnect."""
        if self._stopping:
            return
        await channel.basic_qos(prefetch_count=self._prefetch)
        tags = []
        for method in self._methods.values():
            queue = method_queue(method.name)
            # Expired requests are dropped, not dead-lettered: their caller has moved on.
            await channel.queue_declare(queue, **queue_options(self._queue_type, method=True))
            tags.append(await channel.basic_consume(queue, self._make_consumer(method)))
        self._consumer_tags = tags
        self._raw = channel

    def _make_consumer(self, method: _Method) -> Callable[[Delivery], Coroutine[Any, Any, None]]:
        async def consume(message: Delivery) -> None:
            self._in_flight += 1
            self._idle.clear()
            try:
                assert self._semaphore is not None
                async with self._semaphore:
                    await self._answer(method, message)
            finally:
                self._in_flight -= 1
                if self._in_flight == 0:
                    self._idle.set()

        return consume

    async def _answer(self, method: _Method, message: Delivery) -> None:
        properties = message.properties
        with log_context(correlation_id=properties.correlation_id or "", method=method.name):
            await self._answer_in_context(method, message)

    async def _answer_in_context(self, method: _Method, message: Delivery) -> None:
        properties = message.properties
        channel = message.channel
        if not properties.reply_to:
            await self._dead_letter(message, "request has no reply_to; nobody can get the answer")
            return
        if not is_reply_queue(properties.reply_to):
            await self._dead_letter(
                message,
                f"reply_to {properties.reply_to[:200]!r} is not a reply queue"
                f" ({' or '.join(REPLY_QUEUE_PREFIXES)}…); not answered",
            )
            return
        started = time.perf_counter()
        body, name, outcome = await self._dispatch(method, properties, message.body)
        elapsed_s = time.perf_counter() - started
        SERVER_SECONDS.labels(name, outcome).observe(elapsed_s)
        self.stats.observe(name, elapsed_s, error=outcome != "ok")
        reply_properties = Properties(
            content_type=codec.CONTENT_TYPE,
            correlation_id=properties.correlation_id,
            timestamp=datetime.now(UTC),
        )
        try:
            # mandatory=False: the broker refuses mandatory publishes to amq.rabbitmq.reply-to.
            channel.publish(body, routing_key=properties.reply_to, properties=reply_properties)
            message.ack()
        except WireError:
            # The channel is gone, so the broker will redeliver the request.
            logger.warning("channel lost before answering %s", properties.correlation_id)

    async def _dispatch(
        self, method: _Method, properties: Properties, body: bytes
    ) -> tuple[bytes, str, str]:
        """The reply body, the method that handled it and the outcome (metrics labels)."""
        requested = properties.message_type or method.name
        if requested != method.name:
            target = self._methods.get(requested)
            if target is None:
                reply = codec.encode_error("UnknownMethod", f"no method {requested!r} here")
                return reply, method.name, "UnknownMethod"
            method = target

        def error(type_: str, message: str) -> tuple[bytes, str, str]:
            return codec.encode_error(type_, message), method.name, type_

        try:
            if method.decoder is None:
                result = await method.handler()
            else:
                params = method.decoder.decode(body or b"{}")
                result = await method.handler(params)
        except msgspec.ValidationError as exc:
            return error("BadRequest", f"invalid request: {exc}")
        except msgspec.DecodeError as exc:
            return error("BadRequest", f"malformed JSON: {exc}")
        except ServiceError as exc:
            return error(type(exc).__name__, str(exc))
        except Exception:
            logger.exception(
                "RPC handler %r failed (correlation_id=%s)", method.name, properties.correlation_id
            )
            return error(
                "InternalError",
                f"{method.name} failed; see the server log for {properties.correlation_id}",
            )
        try:
            return codec.encode_ok(result), method.name, "ok"
        except (TypeError, msgspec.EncodeError):
            logger.exception("RPC handler %r returned an unencodable result", method.name)
            return error("InternalError", f"{method.name} returned a bad result")

    async def _dead_letter(self, message: Delivery, reason: str) -> None:
        """Move a request to ``rpc.dead`` with ``reason``; ack only once the broker has it."""
        assert self._dead_channel is not None
        buried = await dead_letter(
            self._dead_channel,
            message,
            message.routing_key,  # the fanout ignores it; it keeps the method's queue name
            reason,
            source_queue=message.routing_key or "",
            exchange=DEAD_EXCHANGE,
        )
        if buried:
            message.ack()
        # Otherwise it stays unacked: the broker redelivers it once the channel goes.


async def _declare_dead_letters(channel: Channel, *, queue_type: QueueType) -> None:
    await channel.exchange_declare(DEAD_EXCHANGE, exchange_type="fanout", durable=True)
    await channel.queue_declare(DEAD_QUEUE, **queue_options(queue_type, method=False))
    await channel.queue_bind(DEAD_QUEUE, DEAD_EXCHANGE)


def _request_decoder(handler: Handler) -> msgspec.json.Decoder[Any] | None:
    parameters = list(inspect.signature(handler).parameters.values())
    if not parameters:
        return None
    if len(parameters) > 1:
        raise TypeError(f"RPC handler {handler.__qualname__} must take at most one argument")
    annotation = get_type_hints(handler).get(parameters[0].name, Any)
    return msgspec.json.Decoder(annotation)
