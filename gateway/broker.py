"""The gateway's link to the broker: connects in the background and keeps trying."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable, Sequence

import rpc
from infra.background import cancel_and_wait
from rpc.connection import tls_options
from rpc.wire.robust import backoff_s

from .settings import GatewaySettings

logger = logging.getLogger(__name__)

# Something that opens its own channels on the connection once it is up.
Attach = Callable[[rpc.WireConnection], Awaitable[None]]


class BrokerLink:
    """Owns the web process's connection and RPC client; never blocks start-up on the broker.

    One connection (rpc.wire) carries everything: RPC calls, confirmed publishes,
    the status and notification feeds, each on its own channel. The ``attach``
    callables run, in order, once the connection is up; their channels recover
    with it by themselves afterwards.
    """

    def __init__(self, settings: GatewaySettings, *, attach: Sequence[Attach] = ()) -> None:
        self._settings = settings
        self._attach = tuple(attach)
        self._connection: rpc.WireConnection | None = None
        self._client: rpc.RpcClient | None = None
        self._connecting: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Begin connecting; the app serves (and /readyz says 503) until the broker answers."""
        self._connecting = asyncio.create_task(self._connect_until_up(), name="broker-connect")

    async def close(self) -> None:
        await cancel_and_wait(self._connecting)
        await self._disconnect()

    async def _disconnect(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
        if self._connection is not None:
            await self._connection.close()
            self._connection = None

    @property
    def ready(self) -> bool:
        """True while the connection and the RPC channel are open."""
        return (
            self._connection is not None
            and self._connection.is_up
            and self._client is not None
            and self._client.ready
        )

    @property
    def connection(self) -> rpc.WireConnection:
        """The process's connection; raises BrokerUnavailable before the first one."""
        if self._connection is None:
            raise rpc.BrokerUnavailable("not connected to the broker yet")
        return self._connection

    @property
    def client(self) -> rpc.RpcClient:
        """The process's RPC client; raises BrokerUnavailable before the first connection."""
        if self._client is None:
            raise rpc.BrokerUnavailable("not connected to the broker yet")
        return self._client

    async def _connect_until_up(self) -> None:
        for attempt in itertools.count():
            try:
                self._connection = await rpc.connect_wire(
                    self._settings.amqp_url,
                    name="gateway",
                    reconnect_interval_s=self._settings.reconnect_interval_s,
                    reconnect_max_s=self._settings.reconnect_max_s,
                    tls=tls_options(self._settings),
                )
                self._client = await rpc.RpcClient.create(
                    self._connection,
                    reply_mode=self._settings.rpc_reply_mode,
                    default_timeout_s=self._settings.rpc_timeout_s,
                )
                for attach in self._attach:
                    await attach(self._connection)
                logger.info("connected to the broker")
                return
            except (rpc.BrokerUnavailable, rpc.wire.Unavailable) as exc:
                logger.warning("broker not reachable (%s); retrying", exc)
            except (rpc.BrokerRefused, rpc.wire.BrokerError) as exc:
                # A login, a permission or a declaration the broker refuses: /readyz
                # stays 503 and says why in the log, until the configuration is fixed.
                logger.error("the broker refused this gateway's set-up (%s); retrying", exc)
            await self._disconnect()
            # The same backoff as the connection's own reconnects.
            settings = self._settings
            await asyncio.sleep(
                backoff_s(attempt, settings.reconnect_interval_s, settings.reconnect_max_s)
            )
