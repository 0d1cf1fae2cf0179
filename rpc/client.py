"""The RPC client: request/reply over one reply path per client."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from datetime import UTC, datetime
from typing import Any, TypeVar, overload

import msgspec

from . import codec
from .errors import (
    BrokerRefused,
    BrokerUnavailable,
    RemoteError,
    RpcClosed,
    RpcError,
    RpcNoServer,
    RpcTimeout,
)
from .metrics import CLIENT_SECONDS
from .settings import ReplyMode
from .topology import DIRECT_REPLY_TO, method_queue
from .wire import (
    BrokerError,
    Channel,
    Delivery,
    Properties,
    RobustChannel,
    Unavailable,
    WireConnection,
    WireError,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")


class RpcClient:
    """Calls RPC methods and awaits their replies; safe for thousands of concurrent calls.

    Create with ``await RpcClient.create(connection)``; close with ``await client.close()``
    or use it as an async context manager.
    """

    def __init__(self, *, reply_mode: ReplyMode, default_timeout_s: float) -> None:
        self._reply_mode = reply_mode
        self._default_timeout_s = default_timeout_s
        self._pending: dict[str, asyncio.Future[bytes]] = {}
        self._ids = itertools.count()
        self._id_prefix = os.urandom(6).hex() + "."
        self._decoders: dict[Any, msgspec.json.Decoder[Any]] = {}
        self._raw: Channel | None = None
        self._reply_to = DIRECT_REPLY_TO
        self._channel: RobustChannel | None = None
        self._closed = False

    @classmethod
    async def create(
        cls,
        connection: WireConnection,
        *,
        reply_mode: ReplyMode = "queue",
        default_timeout_s: float = 10.0,
    ) -> RpcClient:
        """Open the client's channel and start listening for replies."""
        client = cls(reply_mode=reply_mode, default_timeout_s=default_timeout_s)
        try:
            # No publisher confirms: a reply proves delivery, a return (mandatory)
            # proves there is no server, and a lost channel fails the call.
            client._channel = await connection.open_channel(
                client._listen, on_lost=client._on_channel_lost
            )
        except Unavailable as exc:
            raise BrokerUnavailable(f"cannot open the RPC channel: {exc}") from exc
        except BrokerError as exc:  # e.g. 403: this user may not declare its reply queue
            raise BrokerRefused(exc.code, exc.text) from exc
        return client

    async def __aenter__(self) -> RpcClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def reply_to(self) -> str:
        """Where replies come back (the direct reply-to pseudo-queue or this client's queue)."""
        return self._reply_to

    @property
    def ready(self) -> bool:
        """True while the client's channel is open."""
        return self._raw is not None and not self._raw.is_closed

    @overload
    async def call(
        self, method: str, params: Any = None, *, timeout_s: float | None = None
    ) -> Any: ...

    @overload
    async def call(
        self,
        method: str,
        params: Any = None,
        *,
        timeout_s: float | None = None,
        response_type: type[T],
    ) -> T: ...

    async def call(
        self,
        method: str,
        params: Any = None,
        *,
        timeout_s: float | None = None,
        response_type: Any = None,
    ) -> Any:
        """Call ``method`` with ``params`` (a Struct, a dict or None) and return its result.

        The result is decoded to ``response_type`` when given, else to builtin objects.
        Raises RpcTimeout, RpcNoServer, RemoteError, BrokerUnavailable or RpcClosed.
        """
        started = time.perf_counter()
        outcome = "ok"
        try:
            return await self._call(method, params, timeout_s, response_type)
        except RpcError as exc:
            outcome = _outcome(exc)
            raise
        finally:
            CLIENT_SECONDS.labels(method, outcome).observe(time.perf_counter() - started)

    async def _call(
        self, method: str, params: Any, timeout_s: float | None, response_type: Any
    ) -> Any:
        if self._closed:
            raise RpcClosed("the RPC client is closed")
        raw = self._raw
        if raw is None or raw.is_closed:
            raise BrokerUnavailable("the RPC channel is down; the client is reconnecting")
        timeout_s = self._default_timeout_s if timeout_s is None else timeout_s
        correlation_id = f"{self._id_prefix}{next(self._ids)}"
        body = codec.encode({} if params is None else params)
        properties = Properties(
            content_type=codec.CONTENT_TYPE,
            correlation_id=correlation_id,
            message_id=correlation_id,
            reply_to=self._reply_to,
            # The broker drops a request nobody took in time: no server works on a dead call.
            expiration=str(max(1, int(timeout_s * 1000))),
            message_type=method,
            timestamp=datetime.now(UTC),
        )
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._pending[correlation_id] = future
        try:
            async with asyncio.timeout(timeout_s):
                await raw.basic_publish(
                    body, routing_key=method_queue(method), properties=properties, mandatory=True
                )
                reply = await future
        except TimeoutError:
            raise RpcTimeout(f"{method!r} did not reply within {timeout_s} s") from None
        except (BrokerUnavailable, WireError) as exc:
            if self._closed:  # our own close() took the channel away mid-publish
                raise RpcClosed("the RPC client was closed") from exc
            if isinstance(exc, BrokerUnavailable):
                raise
            if isinstance(exc, BrokerError):
                raise BrokerRefused(exc.code, exc.text) from exc
            raise BrokerUnavailable(f"lost the RPC channel: {exc}") from exc
        finally:
            self._pending.pop(correlation_id, None)
        return self._decode(method, reply, response_type)

    def _decode(self, method: str, body: bytes, response_type: Any) -> Any:
        try:
            reply = codec.decode_reply(body)
        except msgspec.DecodeError as exc:
            raise RemoteError("MalformedReply", f"{method!r} sent an undecodable reply") from exc
        if isinstance(reply, codec.Error):
            raise RemoteError.from_reply(reply.type, reply.message)
        if response_type is None:
            return codec.decode_any(reply.result)
        decoder = self._decoders.get(response_type)
        if decoder is None:
            decoder = self._decoders[response_type] = msgspec.json.Decoder(response_type)
        try:
            return decoder.decode(reply.result)
        except msgspec.DecodeError as exc:
            raise RemoteError("MalformedReply", f"{method!r} replied {exc}") from exc

    async def close(self) -> None:
        """Stop listening and fail every pending call with RpcClosed."""
        if self._closed:
            return
        self._closed = True
        self._fail_pending(RpcClosed("the RPC client was closed"))
        if self._channel is not None and not self._channel.is_closed:
            await self._channel.close()

    async def _listen(self, channel: Channel) -> None:
        """Set up the reply path on a (re)opened channel; runs on every reconnect."""
        if self._reply_mode == "direct":
            reply_to = DIRECT_REPLY_TO
        else:
            declared = await channel.queue_declare("", exclusive=True, auto_delete=True)
            assert declared.queue is not None
            reply_to = declared.queue
        await channel.basic_consume(reply_to, self._on_reply, no_ack=True, exclusive=True)
        channel.on_return = self._on_returned
        self._reply_to = reply_to
        self._raw = channel

    def _on_reply(self, message: Delivery) -> None:
        correlation_id = message.properties.correlation_id
        future = self._pending.get(correlation_id or "")
        if future is None or future.done():
            logger.warning("dropping a late or unknown reply (correlation_id=%s)", correlation_id)
            return
        future.set_result(message.body)

    def _on_returned(self, message: Delivery) -> None:
        """A request the broker could not route: nobody serves its method."""
        future = self._pending.get(message.properties.correlation_id or "")
        if future is not None and not future.done():
            method = message.properties.message_type or message.routing_key
            future.set_exception(RpcNoServer(f"no server for {method!r}"))

    def _on_channel_lost(self, exc: BaseException | None) -> None:
        self._raw = None
        if self._pending:
            logger.warning("RPC channel lost; failing %d pending calls", len(self._pending))
        if self._closed:
            self._fail_pending(RpcClosed("the RPC client was closed"))
        else:
            self._fail_pending(BrokerUnavailable(f"lost the RPC channel: {exc}"))

    def _fail_pending(self, error: Exception) -> None:
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(error)


def _outcome(exc: RpcError) -> str:
    """The ``outcome`` label of a failed call."""
    if isinstance(exc, RemoteError):
        return exc.type
    return {
        RpcTimeout: "timeout",
        RpcNoServer: "no_server",
        RpcClosed: "closed",
    }.get(type(exc), "unavailable")
