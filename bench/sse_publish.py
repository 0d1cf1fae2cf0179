"""Status events published at a steady rate, as the workers publish them."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

# One word, so the baseline's "*.<task_id>.*" binding matches "<kind>.<task_id>.<state>".
KIND = "bench"
CONFIRM_TIMEOUT_S = 30.0
# Publishing: a tick every 5 ms keeps bursts small (5 events at 1,000/s).
TICK_S = 0.005
MAX_UNCONFIRMED = 10_000


class Publisher:
    """Confirmed, persistent status events on one channel, as the workers publish them."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._connection: Any = None
        self._channel: Any = None

    async def open(self) -> None:
        import rpc
        from workers.topology import STATUS_EXCHANGE

        async def declare(channel: Any) -> None:
            # Only the exchange: the journal is the gateway's to declare (see --sides).
            await channel.exchange_declare(STATUS_EXCHANGE, exchange_type="topic", durable=True)

        # The workers' own path: rpc.wire and a robust confirming channel (an aio-pika
        # channel here made every publish fail, and the bench printed a table of zeros).
        self._connection = await rpc.connect_wire(self._url, name="bench-sse-publisher")
        self._channel = await self._connection.open_channel(declare, publisher_confirms=True)

    async def close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()

    def publish(self, task_id: str, state: str, **fields: Any) -> asyncio.Task[None]:
        """Start publishing one event now (timestamped now); the task ends at the confirm."""
        from workers.messages import new_event
        from workers.status import publish_status

        event = new_event(KIND, task_id, state, 1, **fields)  # type: ignore[arg-type]
        return asyncio.ensure_future(publish_status(self._channel, event))


@dataclass
class PublishOutcome:
    published: int = 0
    failed: int = 0
    seconds: float = 0.0
    started_at: float = 0.0  # wall clock, to compare with client receipt times
    per_task: Counter[str] = field(default_factory=Counter)

    @property
    def per_s(self) -> float:
        return self.published / self.seconds if self.seconds else 0.0


async def publish_at_rate(
    publisher: Publisher, task_ids: list[str], rate: float, seconds: float, rng: random.Random
) -> PublishOutcome:
    """``progress`` events to random tasks at ``rate``/s for ``seconds``, paced every TICK_S."""
    outcome = PublishOutcome(started_at=time.time())
    total = round(rate * seconds)
    pending: set[asyncio.Task[None]] = set()

    def confirmed(task: asyncio.Task[None]) -> None:
        pending.discard(task)
        if task.cancelled() or task.exception() is not None:
            outcome.failed += 1

    began = time.monotonic()
    sent = 0
    while sent < total:
        due = min(total, int((time.monotonic() - began) * rate) + 1)
        for n in range(sent, due):
            task_id = rng.choice(task_ids)
            outcome.per_task[task_id] += 1
            task = publisher.publish(
                task_id, "progress", percent=round(100 * n / total, 2), message="bench"
            )
            pending.add(task)
            task.add_done_callback(confirmed)
        sent = due
        if len(pending) > MAX_UNCONFIRMED:
            # The broker is behind: wait for confirms rather than pile up more.
            await asyncio.wait(pending, timeout=CONFIRM_TIMEOUT_S, return_when="FIRST_COMPLETED")
        await asyncio.sleep(TICK_S)
    outcome.seconds = time.monotonic() - began
    if pending:
        await asyncio.wait(pending, timeout=CONFIRM_TIMEOUT_S)
    # Not confirmed in time: cancelled, and counted as failed by ``confirmed``.
    for task in list(pending):
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=5)
    outcome.published = sent - outcome.failed
    return outcome
