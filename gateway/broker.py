"""The gateway's link to the broker: connects in the background and keeps trying."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

from aio_pika.abc import AbstractRobustConnection

import rpc
from rpc.connection import BROKER_ERRORS

from .settings import GatewaySettings

logger = logging.getLogger(__name__)

# Something that opens its own channels on a connection once it is up.
Attach = Callable[[AbstractRobustConnection], Awaitable[None]]
AttachWire = Callable[[rpc.WireConnection], Awaitable[None]]


class BrokerLink:
    """Owns the web process's connection and RPC client; never blocks start-up on the broker.

    Two connections: aio-pika for the consumers (``attach``: the status and
    notification feeds), and the lean rpc.wire one for RPC calls and confirmed
    publishes (``attach_wire``: the publisher). The callables run once the
    connections are up; they recover with them by themselves afterwards.
    """

    def __init__(
        self,
        settings: GatewaySettings,
        *,
        attach: Sequence[Attach] = (),
        attach_wire: Sequence[AttachWire] = (),
    ) -> None:
        self._settings = settings
        self._attach = tuple(attach)
        self._attach_wire = tuple(attach_wire)
        self._connection: AbstractRobustConnection | None = None
        self._wire_connection: rpc.WireConnection | None = None
        self._client: rpc.RpcClient | None = None
        self._connecting: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Begin connecting; the app serves (and /readyz says 503) until the broker answers."""
        self._connecting = asyncio.create_task(self._connect_until_up(), name="broker-connect")

    async def close(self) -> None:
        if self._connecting is not None:
            self._connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connecting
        await self._disconnect()

    async def _disconnect(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
        for connection in (self._wire_connection, self._connection):
            if connection is not None:
                await connection.close()
        self._wire_connection = self._connection = None

    @property
    def ready(self) -> bool:
        """True while the connection and the RPC channel are open."""
        return (
            self._connection is not None
            and not self._connection.is_closed
            and self._client is not None
            and self._client.ready
        )

    @property
    def client(self) -> rpc.RpcClient:
        """The process's RPC client; raises BrokerUnavailable before the first connection."""
        if self._client is None:
            raise rpc.BrokerUnavailable("not connected to the broker yet")
        return self._client

    async def _connect_until_up(self) -> None:
        while True:
            try:
                self._connection = await rpc.connect(
                    self._settings.amqp_url,
                    name="gateway",
                    reconnect_interval_s=self._settings.reconnect_interval_s,
                )
                self._wire_connection = await rpc.connect_wire(
                    self._settings.amqp_url,
                    name="gateway-wire",
                    reconnect_interval_s=self._settings.reconnect_interval_s,
                )
                self._client = await rpc.RpcClient.create(
                    self._wire_connection,
                    reply_mode=self._settings.rpc_reply_mode,
                    default_timeout_s=self._settings.rpc_timeout_s,
                )
                for attach in self._attach:
                    await attach(self._connection)
                for attach_wire in self._attach_wire:
                    await attach_wire(self._wire_connection)
                logger.info("connected to the broker")
                return
            except BROKER_ERRORS as exc:
                logger.warning("broker not reachable (%s); retrying", exc)
                await self._disconnect()
                await asyncio.sleep(self._settings.reconnect_interval_s)
