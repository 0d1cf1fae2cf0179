"""Publishing tasks from the gateway: confirmed, bounded in time, on one channel per process."""

from __future__ import annotations

import asyncio

import aiormq
from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection

from rpc.connection import CONNECTION_ERRORS, open_channel
from rpc.errors import BrokerUnavailable
from workers.messages import TaskMessage
from workers.submit import publish_task
from workers.topology import declare_kind


class TaskPublisher:
    """Publishes task messages with publisher confirms; create, then ``await start(connection)``."""

    def __init__(self, *, queue_max_length: int, timeout_s: float) -> None:
        self._queue_max_length = queue_max_length
        self._timeout_s = timeout_s
        self._declared: set[str] = set()
        self._channel: AbstractRobustChannel | None = None

    @property
    def ready(self) -> bool:
        return self._channel is not None and not self._channel.is_closed

    async def start(self, connection: AbstractRobustConnection) -> None:
        self._channel = await open_channel(connection, self._reset, publisher_confirms=True)

    async def close(self) -> None:
        if self._channel is not None and not self._channel.is_closed:
            await self._channel.close()

    async def publish(self, message: TaskMessage) -> None:
        """Return once the broker has ``message``; BrokerUnavailable if it does not in time.

        A full queue (overflow=reject-publish) nacks, which raises BrokerUnavailable too.
        """
        channel = self._channel
        if channel is None or channel.is_closed:
            raise BrokerUnavailable("not connected to the broker")
        try:
            async with asyncio.timeout(self._timeout_s):
                if message.kind not in self._declared:
                    raw = await channel.get_underlay_channel()
                    await declare_kind(raw, message.kind, max_length=self._queue_max_length)
                    self._declared.add(message.kind)
                await publish_task(channel, message)
        except TimeoutError:
            raise BrokerUnavailable(
                f"the broker did not confirm the task within {self._timeout_s} s"
            ) from None
        except CONNECTION_ERRORS as exc:
            raise BrokerUnavailable(f"lost the broker while publishing: {exc}") from exc

    async def _reset(self, channel: aiormq.abc.AbstractChannel) -> None:
        # After a reconnect the broker may have lost non-durable state: declare again.
        self._declared.clear()
