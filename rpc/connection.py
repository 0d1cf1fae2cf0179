"""Connecting to the broker at start-up, and closing channels on the way out.

The connection itself (reconnecting, channels that replay their set-up) is
:class:`rpc.wire.WireConnection`. What a caller catches is the wire's own error
tree (rpc/wire/errors.py): ``Unavailable`` means try again later, ``BrokerError``
means the broker refused the request and retrying the same will not help.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from infra.settings import BaseSettings

from .errors import BrokerRefused, BrokerUnavailable
from .wire import BrokerError, Unavailable, WireConnection, WireError
from .wire.robust import backoff_s
from .wire.tls import TlsOptions

logger = logging.getLogger(__name__)

C = TypeVar("C")


def tls_options(settings: BaseSettings) -> TlsOptions:
    """Whom an ``amqps://`` AMQP_URL trusts and what it shows, from the process's settings."""
    return TlsOptions(settings.amqp_ca_file, settings.amqp_cert_file, settings.amqp_key_file)


async def connect_wire(
    url: str,
    *,
    name: str,
    reconnect_interval_s: float = 1.0,
    reconnect_max_s: float = 30.0,
    timeout_s: float = 10.0,
    tls: TlsOptions | None = None,
) -> WireConnection:
    """Open a self-recovering connection named ``name`` (shown in the broker's connection list).

    ``url`` may name several nodes, comma-separated; reconnects back off from
    ``reconnect_interval_s`` up to ``reconnect_max_s``. ``tls`` applies to an
    ``amqps://`` URL (default: trust the system's CAs).

    Raises BrokerUnavailable if the broker cannot be reached (a failed TLS handshake
    too), BrokerRefused if it refuses the login or the vhost (with its code and text).
    """
    try:
        return await WireConnection.connect(
            url,
            name=name,
            reconnect_interval_s=reconnect_interval_s,
            reconnect_max_s=reconnect_max_s,
            timeout_s=timeout_s,
            tls=tls,
        )
    except Unavailable as exc:
        raise BrokerUnavailable(f"cannot connect to the broker: {exc}") from exc
    except BrokerError as exc:
        raise BrokerRefused(exc.code, exc.text) from exc


async def connect_until_up(
    connector: Callable[..., Awaitable[C]],
    url: str,
    *,
    name: str,
    reconnect_interval_s: float,
    reconnect_max_s: float = 30.0,
    stop: asyncio.Event,
) -> C | None:
    """Connect with ``connector`` (:func:`connect_wire`), retrying while the broker is down,
    so a process may start before it; the retries back off like the connection's own.

    A refused login is retried too (its user may not exist yet, or a password is
    being rotated), with the broker's own words in the log. Returns None if
    ``stop`` is set first (the process was asked to exit).
    """
    attempt = 0
    while not stop.is_set():
        delay_s = backoff_s(attempt, reconnect_interval_s, reconnect_max_s)
        attempt += 1
        try:
            return await connector(
                url,
                name=name,
                reconnect_interval_s=reconnect_interval_s,
                reconnect_max_s=reconnect_max_s,
            )
        except BrokerUnavailable as exc:
            logger.warning("%s; retrying in %.1f s", exc, delay_s)
        except BrokerRefused as exc:
            logger.error("%s; retrying in %.1f s", exc, delay_s)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay_s)
    return None


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
            with contextlib.suppress(WireError):
                await channel.close()


async def cancel_consumers(channel: _Consuming | None, tags: list[str]) -> None:
    """Stop the broker delivering to ``tags``; a channel already gone delivers nothing anyway."""
    if channel is None or channel.is_closed:
        return
    for tag in tags:
        try:
            await channel.basic_cancel(tag)
        except WireError:
            return
