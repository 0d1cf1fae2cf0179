"""A wire connection that reconnects by itself, and channels that replay their set-up.

Each channel has a set-up coroutine that runs on every (re)open, and an ``on_lost`` callback
that runs whenever the channel goes, so work bound to it can fail at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable
from urllib.parse import unquote, urlsplit

from .channel import Channel
from .errors import ChannelLost, ConnectError, ConnectionLost, WireError
from .protocol import AmqpProtocol
from .tls import TlsOptions, client_context, describe

logger = logging.getLogger(__name__)

ChannelSetup = Callable[[Channel], Awaitable[None]]
LostCallback = Callable[[BaseException | None], None]


class WireConnection:
    """A self-recovering connection; create it with ``await WireConnection.connect(url)``."""

    def __init__(
        self,
        url: str,
        *,
        name: str,
        reconnect_interval_s: float,
        timeout_s: float,
        tls: TlsOptions | None = None,
    ):
        parts = urlsplit(url)
        if parts.scheme not in ("amqp", "amqps"):
            raise ValueError(f"only amqp:// and amqps:// URLs are supported, not {parts.scheme}://")
        # Built once: a bad CA or certificate file fails here, not on every reconnect.
        self._ssl = client_context(tls or TlsOptions()) if parts.scheme == "amqps" else None
        self.url = url
        self.name = name
        self.reconnect_interval_s = reconnect_interval_s
        self._timeout_s = timeout_s
        self._host = parts.hostname or "localhost"
        self._port = parts.port or (5671 if self._ssl is not None else 5672)
        self._username = unquote(parts.username or "guest")
        self._password = unquote(parts.password or "guest")
        self._vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
        query = dict(p.split("=", 1) for p in parts.query.split("&") if "=" in p)
        self._heartbeat_s = int(query["heartbeat"]) if "heartbeat" in query else None
        self._auth_mechanism = query.get("auth_mechanism", "plain").upper()
        self._protocol: AmqpProtocol | None = None
        self._channels: list[RobustChannel] = []
        self._closed = False
        self._reconnecting: asyncio.Task[None] | None = None

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        name: str,
        reconnect_interval_s: float = 1.0,
        timeout_s: float = 10.0,
        tls: TlsOptions | None = None,
    ) -> WireConnection:
        """Connect now (raising what failed); reconnect by itself from then on.

        ``tls`` is whom an ``amqps://`` URL trusts (default: the system's CAs).
        """
        connection = cls(
            url, name=name, reconnect_interval_s=reconnect_interval_s, timeout_s=timeout_s, tls=tls
        )
        await connection._open()
        return connection

    @property
    def is_up(self) -> bool:
        return self._protocol is not None and self._protocol.is_open

    @property
    def is_closed(self) -> bool:
        return self._closed

    @property
    def blocked_reason(self) -> str | None:
        """Why the broker blocks publishers on this connection (a memory or disk alarm), or None."""
        return self._protocol.blocked_reason if self._protocol is not None else None

    @property
    def is_blocked(self) -> bool:
        return self.blocked_reason is not None

    async def _open(self) -> None:
        """Connect and shake hands; ConnectError (or the broker's ConnectionClosed) if not."""
        loop = asyncio.get_running_loop()
        where = f"{self._host}:{self._port}"
        try:
            transport, protocol = await asyncio.wait_for(
                loop.create_connection(
                    lambda: AmqpProtocol(
                        username=self._username,
                        password=self._password,
                        vhost=self._vhost,
                        name=self.name,
                        heartbeat_s=self._heartbeat_s,
                        auth_mechanism=self._auth_mechanism,
                    ),
                    self._host,
                    self._port,
                    ssl=self._ssl,
                    server_hostname=self._host if self._ssl is not None else None,
                ),
                self._timeout_s,
            )
        except TimeoutError:
            raise ConnectError(
                f"cannot connect to {where}: no answer in {self._timeout_s} s"
            ) from None
        except ssl.SSLError as exc:  # an OSError too: before it
            raise ConnectError(f"TLS handshake with {where} failed: {describe(exc)}") from exc
        except OSError as exc:
            raise ConnectError(f"cannot connect to {where}: {exc}") from exc
        try:
            await asyncio.wait_for(asyncio.shield(protocol.ready), self._timeout_s)
        except TimeoutError:
            transport.abort()
            raise ConnectError(f"no AMQP handshake from {where} in {self._timeout_s} s") from None
        except BaseException:
            transport.abort()
            raise
        self._protocol = protocol
        protocol.done.add_done_callback(lambda _: self._on_lost(protocol))

    def _on_lost(self, protocol: AmqpProtocol) -> None:
        if protocol is not self._protocol:
            return
        self._protocol = None
        if not self._closed:
            logger.warning("lost the broker connection %r; reconnecting", self.name)
            self._reconnecting = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        while not self._closed:
            await asyncio.sleep(self.reconnect_interval_s)
            try:
                await self._open()
            except WireError as exc:  # the broker's refusal too: a password being rotated
                logger.warning("reconnecting %r failed: %s", self.name, exc)
                continue
            logger.info("reconnected %r", self.name)
            for channel in list(self._channels):
                await channel.restore()
            return

    async def raw_channel(self, *, publisher_confirms: bool = False) -> Channel:
        """A plain channel on the current connection; raises ConnectionLost while it is down."""
        protocol = self._protocol
        if protocol is None or not protocol.is_open:
            raise ConnectionLost("the broker connection is down; reconnecting")
        return await protocol.channel(publisher_confirms=publisher_confirms)

    async def open_channel(
        self,
        setup: ChannelSetup,
        *,
        on_lost: LostCallback | None = None,
        publisher_confirms: bool = False,
    ) -> RobustChannel:
        """Open a channel, run ``setup`` on it now and again each time it is reopened."""
        channel = RobustChannel(self, setup, on_lost, publisher_confirms)
        try:
            await channel.open()
        except BaseException:
            channel.abandon()  # the caller gets the error; nothing reopens behind its back
            raise
        self._channels.append(channel)
        return channel

    def forget(self, channel: RobustChannel) -> None:
        with contextlib.suppress(ValueError):
            self._channels.remove(channel)

    async def close(self) -> None:
        """Close every channel and the connection; no reconnecting after this."""
        if self._closed:
            return
        self._closed = True
        if self._reconnecting is not None:
            self._reconnecting.cancel()
        for channel in list(self._channels):
            channel.abandon()
        if self._protocol is not None:
            await self._protocol.close()


class RobustChannel:
    """A channel that outlives its underlying channels: reopened, set up again, on every loss."""

    def __init__(
        self,
        connection: WireConnection,
        setup: ChannelSetup,
        on_lost: LostCallback | None,
        publisher_confirms: bool,
    ) -> None:
        self._connection = connection
        self._setup = setup
        self._on_lost = on_lost
        self._publisher_confirms = publisher_confirms
        self.raw: Channel | None = None
        self._closed = False
        self._reopening: asyncio.Task[None] | None = None

    @property
    def is_closed(self) -> bool:
        return self._closed

    async def get_underlay_channel(self) -> Channel:
        """The current underlying channel; raises ChannelLost while it is being reopened."""
        if self.raw is None or self.raw.is_closed:
            raise ChannelLost("the channel is down; reopening")
        return self.raw

    async def open(self) -> None:
        raw = await self._connection.raw_channel(publisher_confirms=self._publisher_confirms)
        raw.close_callbacks.append(lambda error: self._raw_lost(raw, error))
        self.raw = raw
        try:
            await self._setup(raw)
        except BaseException:
            await raw.close()
            raise

    async def restore(self) -> None:
        """Reopen and set up again (after a reconnect, or after the broker closed the channel)."""
        if self._closed or self.raw is not None:
            return
        try:
            await self.open()
        except Exception:
            # Closing the failed channel schedules the next attempt (see _raw_lost).
            logger.exception("channel set-up failed; reopening the channel")

    def _raw_lost(self, raw: Channel, error: Exception) -> None:
        if raw is not self.raw:
            return
        self.raw = None
        if self._on_lost is not None:
            self._on_lost(error)
        if not self._closed and self._connection.is_up:
            # The broker closed just this channel: reopen it after a pause. After a lost
            # connection, the reconnect restores every channel instead.
            self._reopening = asyncio.get_running_loop().create_task(self._reopen_later())

    async def _reopen_later(self) -> None:
        await asyncio.sleep(self._connection.reconnect_interval_s)
        await self.restore()

    def abandon(self) -> None:
        """Stop reopening (the connection is closing)."""
        self._closed = True
        if self._reopening is not None:
            self._reopening.cancel()

    async def close(self) -> None:
        """Close the channel for good."""
        self.abandon()
        self._connection.forget(self)
        if self.raw is not None:
            await self.raw.close()
