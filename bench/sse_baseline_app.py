"""Baseline for ``bench/sse.py``: SSE as the common tutorial builds it, one queue per client.

Each ``GET /tasks/{task_id}/events`` opens its own channel, declares an
exclusive, auto-delete, server-named queue, binds it to the ``status`` topic
exchange with ``*.<task_id>.*``, consumes it and forwards every message body as
the ``data:`` of an SSE event until the client goes away; then the channel is
closed, which deletes the queue. No store, no replay, no sequence numbers, and
no auth (the Authorization header the bench's clients send is ignored).

The tutorial opens a connection per client; a channel on a shared connection
is the cheapest variant of it, so that is what runs here. RabbitMQ allows
2,047 channels per connection by default, so the streams share as many
connections as they need, BASELINE_STREAMS_PER_CONNECTION (1,000) channels
each. Connections are plain (not robust) ones: lighter per channel, again the
baseline's best case.

Same URL shape and the same first frame (``retry:``, sent once the queue is
bound) as the gateway, so one client drives both:

    AMQP_URL=amqp://... HOST=127.0.0.1 PORT=8001 python bench/sse_baseline_app.py
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aio_pika
import uvicorn
from aio_pika.abc import AbstractChannel, AbstractConnection
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

STATUS_EXCHANGE = "status"  # workers.topology.STATUS_EXCHANGE, repeated to stay standalone
# Same heartbeat and reconnect hint as the gateway's defaults (gateway/settings.py).
PING_S = 15.0
RETRY_MS = 2_000
SEND_TIMEOUT_S = 10.0


@dataclass
class _Slot:
    connection: AbstractConnection
    channels: int = 0


class ChannelPool:
    """Channels for the streams, spread over connections of at most ``per_connection`` each."""

    def __init__(self, url: str, per_connection: int) -> None:
        self._url = url
        self._per_connection = per_connection
        self._slots: list[_Slot] = []
        # One opener at a time: a burst of requests must not open a connection each.
        self._lock = asyncio.Lock()

    @property
    def connections(self) -> int:
        return len(self._slots)

    async def start(self) -> None:
        """Open the first connection and declare the exchange the queues bind to."""
        slot = await self._reserve()
        try:
            channel = await slot.connection.channel()
            await channel.declare_exchange(
                STATUS_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
            )
            await channel.close()
        finally:
            slot.channels -= 1

    async def close(self) -> None:
        for slot in self._slots:
            with contextlib.suppress(Exception):
                await slot.connection.close()
        self._slots.clear()

    @contextlib.asynccontextmanager
    async def channel(self) -> AsyncIterator[AbstractChannel]:
        """A channel of its own for the ``with`` block; closing it drops its queue."""
        slot = await self._reserve()
        try:
            channel = await slot.connection.channel()
            try:
                yield channel
            finally:
                with contextlib.suppress(Exception):
                    await channel.close()
        finally:
            slot.channels -= 1

    async def _reserve(self) -> _Slot:
        async with self._lock:
            for slot in self._slots:
                if slot.channels < self._per_connection and not slot.connection.is_closed:
                    slot.channels += 1
                    return slot
            slot = _Slot(await aio_pika.connect(self._url), channels=1)
            self._slots.append(slot)
            return slot


async def forward_task_events(pool: ChannelPool, task_id: str) -> AsyncIterator[ServerSentEvent]:
    """The tutorial's stream: a private queue bound to the task's events, forwarded as they come."""
    async with pool.channel() as channel:
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        # The bench's kind is one word, so "*.<task_id>.*" matches "<kind>.<task_id>.<state>".
        await queue.bind(STATUS_EXCHANGE, routing_key=f"*.{task_id}.*")
        # Sent only now, so a client that saw it knows the queue is bound.
        yield ServerSentEvent(retry=RETRY_MS)
        async with queue.iterator(no_ack=True) as messages:
            async for message in messages:
                state = (message.routing_key or "").rsplit(".", 1)[-1]
                yield ServerSentEvent(data=message.body.decode(), event=state)


async def task_events(request: Request) -> Response:
    pool: ChannelPool = request.app.state.pool
    return EventSourceResponse(
        forward_task_events(pool, request.path_params["task_id"]),
        ping=PING_S,
        send_timeout=SEND_TIMEOUT_S,
    )


async def readyz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ready", "connections": request.app.state.pool.connections})


def create_app(url: str, per_connection: int) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.pool = ChannelPool(url, per_connection)
        await app.state.pool.start()
        try:
            yield
        finally:
            await app.state.pool.close()

    routes = [Route("/readyz", readyz), Route("/tasks/{task_id}/events", task_events)]
    return Starlette(routes=routes, lifespan=lifespan)


def main() -> None:
    # Exit 0 on SIGTERM like the gateway (uvicorn re-raises the signal it stopped on).
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: None)
    app = create_app(
        os.environ["AMQP_URL"],
        int(os.environ.get("BASELINE_STREAMS_PER_CONNECTION", "1000")),
    )
    uvicorn.run(
        app,
        host=os.environ.get("HOST", "127.0.0.1"),
        port=int(os.environ.get("PORT", "8001")),
        timeout_graceful_shutdown=5,
    )


if __name__ == "__main__":
    main()
