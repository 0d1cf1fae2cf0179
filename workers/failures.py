"""After a failed attempt: a retry copy through a delay tier, or the dead-letter queue."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from rpc.dead_letter import dead_letter
from rpc.errors import BrokerUnavailable
from rpc.publish import persistent_copy, publish_confirmed
from rpc.wire import Delivery, RobustChannel

from .deliveries import describe, priority_of, traceback_summary
from .messages import StatusEvent, new_event
from .registry import Task
from .settings import WorkerSettings
from .topology import ATTEMPT_HEADER, dead_queue, retry_tier, task_queue, task_routing_key

logger = logging.getLogger(__name__)

# Headers the broker adds on dead-lettering; a retry copy starts without them.
_BROKER_HEADERS = ("x-death", "x-first-death-", "x-last-death-", "x-delivery-count")


@dataclass(frozen=True, slots=True)
class Failures:
    """Where a worker sends failed attempts: its publishing channel and status publisher."""

    channel: RobustChannel
    publish: Callable[[StatusEvent], Awaitable[None]]
    settings: WorkerSettings


async def retry_or_bury(
    failures: Failures,
    task: Task,
    message: Delivery,
    task_id: str,
    attempt: int,
    headers: dict[str, Any],
    exc: Exception,
) -> None:
    """Publish ``retrying`` and a retry copy, or dead-letter after the last attempt."""
    settings = failures.settings
    max_attempts = task.max_attempts or settings.max_attempts
    error = describe(exc)
    if attempt >= max_attempts:
        logger.warning("task %s (%s) exhausted %d attempts: %s", task_id, task.kind, attempt, error)
        await bury(
            failures,
            task,
            message,
            task_id=task_id,
            attempt=attempt,
            reason=f"attempts exhausted ({attempt}/{max_attempts}): {error}",
            tb=traceback_summary(exc),
        )
        return
    delay_ms = settings.retry_delay_ms(attempt)
    logger.info(
        "task %s (%s) attempt %d failed, retry in %d ms: %s",
        task_id,
        task.kind,
        attempt,
        delay_ms,
        error,
    )
    await failures.publish(
        new_event(task.kind, task_id, "retrying", attempt, error=error, retry_in_ms=delay_ms)
    )
    retry_headers = {k: v for k, v in headers.items() if not k.startswith(_BROKER_HEADERS)}
    retry_headers[ATTEMPT_HEADER] = attempt + 1
    await publish_confirmed(
        failures.channel,
        message.body,
        exchange=retry_tier(delay_ms),
        # The tier keeps the routing key: back to the queue of the level it came from.
        routing_key=task_routing_key(task.kind, priority_of(task.kind, message)),
        properties=persistent_copy(message.properties, retry_headers),
    )


async def bury(
    failures: Failures,
    task: Task,
    message: Delivery,
    *,
    task_id: str | None,
    attempt: int,
    reason: str,
    tb: str = "",
) -> None:
    """Move the message to ``tasks.<kind>.dead`` with why; publish ``dead``; the caller acks."""
    buried = await dead_letter(
        failures.channel,
        message,
        dead_queue(task.kind),
        reason,
        source_queue=task_queue(task.kind),
        traceback=tb,
        headers={ATTEMPT_HEADER: attempt},
    )
    if not buried:
        raise BrokerUnavailable(f"could not dead-letter a {task.kind} task")
    if task_id is not None:
        await failures.publish(new_event(task.kind, task_id, "dead", attempt, error=reason))
