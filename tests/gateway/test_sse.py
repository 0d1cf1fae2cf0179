"""The SSE response's write bound and the hub's wait timer: a stuck client ends, others do not."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

from gateway.hub import Hub
from gateway.sse import EventStreamResponse, StreamEnd
from gateway.store import StoredEvent

SCOPE = {"type": "http", "method": "GET"}


class Client:
    """An ASGI peer whose writes block from the ``stuck_after``-th body on, until released."""

    def __init__(self, stuck_after: int) -> None:
        self.bodies: list[bytes] = []
        self._stuck_after = stuck_after
        self.released = asyncio.Event()
        self.gone = asyncio.Event()
        self.stuck = asyncio.Event()

    async def send(self, message: dict) -> None:
        if message["type"] == "http.response.body":
            if len(self.bodies) >= self._stuck_after:
                self.stuck.set()
                await self.released.wait()  # a full socket buffer: the client stopped reading
            self.bodies.append(message["body"])

    async def receive(self) -> dict:
        await self.gone.wait()
        return {"type": "http.disconnect"}


async def frames(count: int, closed: asyncio.Event) -> AsyncGenerator[bytes, None]:
    try:
        for n in range(count):
            yield b"data: %d\n\n" % n
    finally:
        closed.set()


async def test_a_write_that_does_not_finish_in_time_ends_the_stream_not_the_task():
    client, closed = Client(stuck_after=3), asyncio.Event()
    response = EventStreamResponse(frames(100, closed), end=StreamEnd(), send_timeout_s=0.2)

    await asyncio.wait_for(response(SCOPE, client.receive, client.send), timeout=30)

    assert client.bodies == [b"data: 0\n\n", b"data: 1\n\n", b"data: 2\n\n"]
    assert closed.is_set()
    assert asyncio.current_task().cancelling() == 0


async def test_writes_that_finish_are_never_cut_off_however_long_the_stream_lasts():
    client = Client(stuck_after=10**9)

    async def slow_frames() -> AsyncGenerator[bytes, None]:
        for n in range(4):
            await asyncio.sleep(0.15)  # the stream lives past several write bounds
            yield b"data: %d\n\n" % n

    response = EventStreamResponse(slow_frames(), end=StreamEnd(), send_timeout_s=0.1)
    await asyncio.wait_for(response(SCOPE, client.receive, client.send), timeout=30)

    assert client.bodies[:4] == [b"data: %d\n\n" % n for n in range(4)]
    assert client.bodies[4] == b""  # the response's own end


async def test_a_stream_cancelled_by_someone_else_stays_cancelled():
    client, closed = Client(stuck_after=1), asyncio.Event()
    response = EventStreamResponse(frames(10, closed), end=StreamEnd(), send_timeout_s=60)
    task = asyncio.create_task(response(SCOPE, client.receive, client.send))
    await asyncio.wait_for(client.stuck.wait(), timeout=30)

    task.cancel()

    try:
        await task
    except asyncio.CancelledError:
        pass
    assert task.cancelled()


async def test_a_wait_ends_at_its_timeout_after_earlier_waits_ended_early():
    hub = Hub(capacity=8)
    with hub.subscribe("a") as subscription:
        for seq in range(1, 4):  # each ends early, leaving the timer armed for later
            hub.publish(StoredEvent("a", seq, "progress", b"{}"))
            await subscription.wait(timeout_s=60)
            subscription.take()
        # Ends (within wait_for's bound) only if the shorter timeout moved the timer forward.
        await asyncio.wait_for(subscription.wait(timeout_s=0.2), timeout=30)

    assert not subscription.take()
