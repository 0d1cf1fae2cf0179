"""Helpers shared by tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import aio_pika

from workers.topology import task_queue


async def eventually(
    condition: Callable[[], Awaitable[bool]], timeout_s: float = 60, interval_s: float = 0.1
) -> None:
    """Poll ``condition`` until it holds; only for state that offers no event to await."""
    async with asyncio.timeout(timeout_s):
        while not await condition():  # noqa: ASYNC110  (there is no event to await)
            await asyncio.sleep(interval_s)


async def take_tasks(amqp_url: str, kind: str) -> list[str]:
    """The ids of the tasks waiting in ``kind``'s queue (nobody consumes it), taken off it."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(task_queue(kind), passive=True)
        ids = []
        while (message := await queue.get(fail=False, no_ack=True)) is not None:
            ids.append(str(message.message_id))
        return ids
