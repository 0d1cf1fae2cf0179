"""A broker connection that recovers by itself, and channels that replay their set-up.

aio-pika's robust connection reconnects and reopens channels; what a channel
declared and consumed through raw aiormq calls is replayed here by a set-up
coroutine that runs on every (re)open, so declarations and consumers come
back after a broker restart instead of silently staying gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import aio_pika
import aiormq
from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection

from .errors import BrokerUnavailable
from .wire import WireConnection
from .wire.robust import OPEN_ERRORS

logger = logging.getLogger(__name__)

C = TypeVar("C")
ChannelSetup = Callable[[aiormq.abc.AbstractChannel], Awaitable[None]]
ChannelLost = Callable[[BaseException | None], None]

# What aio-pika and aiormq raise when the broker is unreachable or goes away.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    ConnectionError,
    OSError,
    aiormq.exceptions.AMQPConnectionError,
    aiormq.exceptions.ChannelInvalidStateError,
    aiormq.exceptions.ConnectionClosed,
    aiormq.exceptions.ChannelClosed,
)
# Any of those, or our own translation of them.
BROKER_ERRORS: tuple[type[BaseException], ...] = (BrokerUnavailable, *CONNECTION_ERRORS)
CONNECT_ERRORS: tuple[type[BaseException], ...] = (*CONNECTION_ERRORS, TimeoutError)


async def connect(
    url: str, *, name: str, reconnect_interval_s: float = 1.0, timeout_s: float = 10.0
) -> AbstractRobustConnection:
    """Open a self-recovering connection named ``name`` (shown in the broker's connection list)."""
    try:
        return await aio_pika.connect_robust(
            url,
            reconnect_interval=reconnect_interval_s,
            timeout=timeout_s,
            client_properties={"connection_name": name},
        )
    except CONNECT_ERRORS as exc:
        raise BrokerUnavailable(f"cannot connect to the broker: {exc}") from exc


async def connect_wire(
    url: str, *, name: str, reconnect_interval_s: float = 1.0, timeout_s: float = 10.0
) -> WireConnection:
    """Open the lean, self-recovering connection that RpcClient and RpcServer run on."""
    try:
        return await WireConnection.connect(
            url, name=name, reconnect_interval_s=reconnect_interval_s, timeout_s=timeout_s
        )
    except OPEN_ERRORS as exc:
        raise BrokerUnavailable(f"cannot connect to the broker: {exc}") from exc


async def connect_until_up(
    connector: Callable[..., Awaitable[C]],
    url: str,
    *,
    name: str,
    reconnect_interval_s: float,
    stop: asyncio.Event,
) -> C | None:
    """Connect with ``connector`` (:func:`connect` or :func:`connect_wire`), retrying while
    the broker is down, so a process may start before it.

    Returns None if ``stop`` is set first (the process was asked to exit).
    """
    while not stop.is_set():
        try:
            return await connector(url, name=name, reconnect_interval_s=reconnect_interval_s)
        except BrokerUnavailable as exc:
            logger.warning("%s; retrying in %s s", exc, reconnect_interval_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), reconnect_interval_s)
    return None


async def open_channel(
    connection: AbstractRobustConnection,
    setup: ChannelSetup,
    *,
    on_lost: ChannelLost | None = None,
    publisher_confirms: bool = False,
) -> AbstractRobustChannel:
    """Open a channel, run ``setup`` on it now and again each time it is reopened.

    ``on_lost`` runs whenever the underlying channel closes, so callers can fail
    work that was bound to it (pending replies, unacked deliveries).
    """
    channel: Any = await connection.channel(publisher_confirms=publisher_confirms)

    async def replay(_sender: object) -> None:
        try:
            await setup(await channel.get_underlay_channel())
        except Exception:
            # A failed replay leaves the channel without its consumers; closing the
            # underlying channel makes aio-pika reopen it and replay again.
            logger.exception("channel set-up failed; reopening the channel")
            raw = await channel.get_underlay_channel()
            await raw.close()

    if on_lost is not None:
        lost = on_lost

        def closed(_sender: object, exc: BaseException | None = None) -> None:
            lost(exc)

        channel.close_callbacks.add(closed)
    channel.reopen_callbacks.add(replay)
    await setup(await channel.get_underlay_channel())
    return channel


class _Closable(Protocol):
    @property
    def is_closed(self) -> bool: ...

    def close(self) -> Awaitable[Any]: ...


class _Consuming(Protocol):
    @property
    def is_closed(self) -> bool: ...

    def basic_cancel(self, consumer_tag: str) -> Awaitable[Any]: ...


async def close_channels(*channels: _Closable | None) -> None:
    """Close what is still open; a channel the broker already took away needs nothing."""
    for channel in channels:
        if channel is not None and not channel.is_closed:
            try:
                await channel.close()
            except CONNECTION_ERRORS:
                pass


async def cancel_consumers(channel: _Consuming | None, tags: list[str]) -> None:
    """Stop the broker delivering to ``tags``; a channel already gone delivers nothing anyway."""
    if channel is None or channel.is_closed:
        return
    for tag in tags:
        try:
            await channel.basic_cancel(tag)
        except CONNECTION_ERRORS:
            return
