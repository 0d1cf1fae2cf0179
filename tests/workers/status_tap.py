"""Every status event the broker routes for one task or order, as published (no deduplication)."""

from __future__ import annotations

from aio_pika.abc import AbstractQueue

from workers.messages import StatusEvent, event_decoder
from workers.topology import STATUS_EXCHANGE

TERMINAL = ("succeeded", "failed", "dead")


class StatusTap:
    """An exclusive queue bound to ``status`` for chosen ids; ``events()`` drains it."""

    def __init__(self, queue: AbstractQueue) -> None:
        self._queue = queue
        self.seen: list[StatusEvent] = []

    async def watch(self, task_id: str) -> None:
        """Keep the events of ``task_id`` (an order id too), whatever its kind."""
        await self._queue.bind(STATUS_EXCHANGE, routing_key=f"#.{task_id}.#")

    async def events(self, task_id: str) -> list[StatusEvent]:
        """The events of ``task_id`` routed so far, every copy."""
        while (message := await self._queue.get(fail=False, no_ack=True)) is not None:
            self.seen.append(event_decoder.decode(message.body))
        return [event for event in self.seen if event.task_id == task_id]

    async def terminal(self, task_id: str) -> list[StatusEvent]:
        return [event for event in await self.events(task_id) if event.state in TERMINAL]
