"""A wire connection that reconnects by itself, and channels that replay their set-up.

Each channel has a set-up coroutine that runs on every (re)open, and an ``on_lost`` callback
that runs whenever the channel goes, so work bound to it can fail at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import ssl
from collections.abc import Awaitable, Callable

from .address import BrokerAddress, parse_addresses
from .channel import Channel
from .errors import ChannelLost, ConnectError, ConnectionLost, Unavailable, WireError
from .protocol import AmqpProtocol
from .tls import TlsOptions, client_context, describe

logger = logging.getLogger(__name__)

ChannelSetup = Callable[[Channel], Awaitable[None]]
LostCallback = Callable[[BaseException | None], None]


def backoff_s(
    attempt: int, base_s: float, cap_s: float, rand: Callable[[], float] = random.random
) -> float:
    """Exponential backoff with jitter: retry ``attempt`` (0-based) waits between half and all
    of ``base_s * 2**attempt``, capped at ``cap_s``; the jitter keeps clients that lost the
    same node from coming back in step."""
    ceiling = min(cap_s, base_s * 2 ** min(attempt, 64))
    return ceiling * (0.5 + 0.5 * rand())


class WireConnection:
    """A self-recovering connection; create it with ``await WireConnection.connect(url)``.

    ``url`` may name several nodes (comma-separated URLs, see address.py). They are tried
    in a shuffled order (``shuffle``, so clients spread over a cluster), the first that
    answers wins; after a loss the others are tried first, then the one that was lost.
    """

    def __init__(
        self,
        url: str,
        *,
        name: str,
        reconnect_interval_s: float,
        timeout_s: float,
        reconnect_max_s: float = 30.0,
        shuffle: Callable[[list[BrokerAddress]], None] = random.shuffle,
        tls: TlsOptions | None = None,
    ):
        self.url = url
        self.name = name
        self.addresses = parse_addresses(url)
        # Built once: a bad CA or certificate file fails here, not on every reconnect.
        wants_tls = any(address.scheme == "amqps" for address in self.addresses)
        self._ssl = client_context(tls or TlsOptions()) if wants_tls else None
        shuffle(self.addresses)
        self.reconnect_interval_s = reconnect_interval_s
        self.reconnect_max_s = max(reconnect_max_s, reconnect_interval_s)
        self._timeout_s = timeout_s
        self._next = 0  # index in self.addresses of the first one to try
        self.address: BrokerAddress | None = None  # the node it is connected to
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
        reconnect_max_s: float = 30.0,
        shuffle: Callable[[list[BrokerAddress]], None] = random.shuffle,
        tls: TlsOptions | None = None,
    ) -> WireConnection:
        """Connect now (raising what failed); reconnect by itself from then on.

        ``tls`` is whom an ``amqps://`` URL trusts (default: the system's CAs).
        """
        connection = cls(
            url,
            name=name,
            reconnect_interval_s=reconnect_interval_s,
            timeout_s=timeout_s,
            reconnect_max_s=reconnect_max_s,
            shuffle=shuffle,
            tls=tls,
        )
        await connection._open()
        return connection

    def backoff_s(self, attempt: int) -> float:
        """The pause before retry number ``attempt`` (0-based) of this connection's set-ups."""
        return backoff_s(attempt, self.reconnect_interval_s, self.reconnect_max_s)

    @property
    def is_up(self) -> bool:
        return self._protocol is not None and self._protocol.is_open

    @property
    def is_closed(self) -> bool:
        return self._closed

    @property
    def user_id(self) -> str | None:
        """The broker user this connection logs in as, which its messages carry as ``user_id``."""
        return (self.address or self.addresses[0]).user_id

    @property
    def blocked_reason(self) -> str | None:
        """Why the broker blocks publishers on this connection (a memory or disk alarm), or None."""
        return self._protocol.blocked_reason if self._protocol is not None else None

    @property
    def is_blocked(self) -> bool:
        return self.blocked_reason is not None

    async def _open(self) -> None:
        """Connect to the first node that answers, starting at ``self._next``.

        Raises ConnectError if none answers; if a node answered but refused (its login, its
        vhost), that refusal, since trying again will not help.
        """
        count = len(self.addresses)
        errors: list[WireError] = []
        for i in range(count):
            index = (self._next + i) % count
            address = self.addresses[index]
            try:
                protocol = await self._open_one(address)
            except WireError as exc:
                if count > 1:
                    logger.warning("cannot connect %r to %s: %s", self.name, address, exc)
                errors.append(exc)
                continue
            self.address = address
            self._next = (index + 1) % count  # after a loss, the others first
            self._protocol = protocol
            protocol.done.add_done_callback(functools.partial(self._on_done, protocol))
            return
        refused = [e for e in errors if not isinstance(e, Unavailable)]
        if refused:
            raise refused[0]
        if count == 1:
            raise errors[0]
        raise ConnectError("; ".join(str(e) for e in errors))

    async def _open_one(self, address: BrokerAddress) -> AmqpProtocol:
        """Open a transport to one node and shake hands; ConnectError or the broker's refusal."""
        loop = asyncio.get_running_loop()
        where = f"{address.host}:{address.port}"
        context = self._ssl if address.scheme == "amqps" else None
        timeout_s = self._timeout_s
        if address.connection_timeout_ms:
            timeout_s = address.connection_timeout_ms / 1000

        def make_protocol() -> AmqpProtocol:
            protocol = AmqpProtocol(
                username=address.username,
                password=address.password,
                vhost=address.vhost,
                name=self.name,
                heartbeat_s=address.heartbeat_s,
                auth_mechanism=address.auth_mechanism,
                user_id=address.user_id,
            )
            # Upper bounds for the Tune negotiation (0 or unset: the client's own).
            if address.channel_max:
                protocol._channel_max = min(address.channel_max, protocol._channel_max)
            if address.frame_max:
                protocol.frame_max = min(address.frame_max, protocol.frame_max)
            return protocol

        try:
            # asyncio.timeout, not wait_for: Python 3.11's wait_for returns the inner error
            # (here OSError) when a cancel meets a refused connect, and the cancel is lost.
            async with asyncio.timeout(timeout_s):
                transport, protocol = await loop.create_connection(
                    make_protocol,
                    address.host,
                    address.port,
                    ssl=context,
                    server_hostname=address.host if context is not None else None,
                )
        except TimeoutError:
            raise ConnectError(f"cannot connect to {where}: no answer in {timeout_s} s") from None
        except ssl.SSLError as exc:  # an OSError too: before it
            raise ConnectError(f"TLS handshake with {where} failed: {describe(exc)}") from exc
        except OSError as exc:
            raise ConnectError(f"cannot connect to {where}: {exc}") from exc
        try:
            await asyncio.wait_for(asyncio.shield(protocol.ready), timeout_s)
        except TimeoutError:
            transport.abort()
            raise ConnectError(f"no AMQP handshake from {where} in {timeout_s} s") from None
        except BaseException:
            transport.abort()
            raise
        return protocol

    def _on_done(self, protocol: AmqpProtocol, _: asyncio.Future[None]) -> None:
        self._on_lost(protocol)

    def _on_lost(self, protocol: AmqpProtocol) -> None:
        if protocol is not self._protocol:
            return
        self._protocol = None
        if not self._closed:
            logger.warning(
                "lost the broker connection %r to %s; reconnecting", self.name, self.address
            )
            self._reconnecting = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        attempt = 0
        while not self._closed:
            await asyncio.sleep(self.backoff_s(attempt))
            attempt += 1
            try:
                await self._open()
            except WireError as exc:  # the broker's refusal too: a password being rotated
                logger.warning("reconnecting %r failed: %s", self.name, exc)
                continue
            logger.info("reconnected %r to %s", self.name, self.address)
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
        self._restoring = False
        self._failures = 0  # set-ups that failed in a row: the backoff step

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
        """Reopen and set up again (after a reconnect, or after the broker closed the channel).

        A set-up that fails is retried with the connection's backoff, its error logged once
        per attempt: a 406 in a declaration does not go away by retrying at full speed.
        """
        if self._closed or self.raw is not None or self._restoring:
            return
        self._restoring = True
        try:
            await self.open()
        except Exception as exc:
            delay_s = self._connection.backoff_s(self._failures)
            self._failures += 1
            logger.error(
                "setting up a channel on %r failed (%d in a row): %s; retrying in %.1f s",
                self._connection.name,
                self._failures,
                exc,
                delay_s,
            )
            if self._connection.is_up:  # else the reconnect restores it
                self._reopen_after(delay_s)
        else:
            self._failures = 0
        finally:
            self._restoring = False

    def _raw_lost(self, raw: Channel, error: Exception) -> None:
        if raw is not self.raw:
            return
        self.raw = None
        if self._on_lost is not None:
            self._on_lost(error)
        if not self._closed and not self._restoring and self._connection.is_up:
            # The broker closed just this channel: reopen it after a pause. After a lost
            # connection, the reconnect restores every channel instead; a failed restore
            # schedules its own retry.
            self._reopen_after(self._connection.backoff_s(self._failures))

    def _reopen_after(self, delay_s: float) -> None:
        if self._reopening is not None and self._reopening is not asyncio.current_task():
            self._reopening.cancel()
        self._reopening = asyncio.get_running_loop().create_task(self._reopen_later(delay_s))

    async def _reopen_later(self, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
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
