"""The outbox relay: publishes what the gateway accepted, until the broker has confirmed it.

One runs in every web process. It claims due entries for a lease, publishes
them at once (persistent, confirmed, mandatory, ``message_id`` = the task or
order id), deletes the confirmed ones and gives the others a later attempt
with backoff: a broker that is down, paused, nacks (a full task queue) or
returns a message unroutable delays work, never loses it.

The accept path wakes the relay after its commit, so a message usually leaves
within milliseconds; without a wake-up the relay sleeps until the earliest
entry is due (a delayed task, a retry), and at most ``poll_s``: it looks that
often for entries another gateway accepted or held when it died (free again
once its lease ran out).

The relay waits for a confirm up to half the lease: a paused broker confirms
late instead of the message being published twice, and no other relay takes
an entry while its publish may still be confirmed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections import Counter

from prometheus_client import Counter as CounterMetric
from prometheus_client import Gauge

from infra.background import cancel_and_wait
from infra.database import Database, DatabaseError, Transaction
from rpc.errors import BrokerRefused, BrokerUnavailable
from rpc.wire import PublishNacked
from rpc.wire.robust import backoff_s

from .outbox import (
    OutboxEntry,
    any_due,
    claim_due,
    mark_sent,
    next_due_at,
    pending_count,
    release,
    retry_later,
    scheduled_count,
)
from .publisher import Publisher, Unroutable

logger = logging.getLogger(__name__)

OUTBOX_PUBLISHED = CounterMetric(
    "taskgate_outbox_published", "Outbox messages published and confirmed by this process"
)
OUTBOX_RETRIES = CounterMetric(
    "taskgate_outbox_retries",
    "Outbox publishes that will be tried again, by reason"
    " (nacked: a full queue; unroutable; unavailable; refused: a broker configuration error)",
    ["reason"],
)
OUTBOX_PENDING = Gauge(
    "taskgate_outbox_pending",
    "Accepted messages due and not yet confirmed by the broker (all gateways)",
)
OUTBOX_SCHEDULED = Gauge(
    "taskgate_outbox_scheduled", "Accepted messages not due yet: delayed tasks (all gateways)"
)

# The first retry's pause; it doubles up to the relay's ``retry_max_s``.
RETRY_BASE_S = 0.5


class OutboxRelay:
    """Publishes the outbox of ``database`` through ``publisher``; ``start()``, then ``close()``."""

    def __init__(
        self,
        database: Database,
        publisher: Publisher,
        *,
        lease_s: float,
        poll_s: float,
        retry_max_s: float,
        batch: int = 200,
        name: str | None = None,
    ) -> None:
        self._database = database
        self._publisher = publisher
        self._lease_s = lease_s
        self._poll_s = poll_s
        self._retry_max_s = retry_max_s
        self._batch = batch
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self._woken = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

    def wake(self) -> None:
        """Something was committed to the outbox: publish it now rather than at the next poll."""
        self._woken.set()

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        # What this relay still holds is free for the others now, not after the lease.
        with contextlib.suppress(DatabaseError):
            await self._database.write(self._release)

    async def _release(self, tx: Transaction) -> None:
        await tx.execute(
            "UPDATE outbox SET claimed_by = NULL, claimed_until = NULL WHERE claimed_by = $1",
            self.name,
        )

    async def _run(self) -> None:
        while True:
            # Cleared before the work, so a wake-up during it is not lost.
            self._woken.clear()
            drained_at = time.time()
            try:
                await self.drain()
            except DatabaseError as exc:
                logger.warning("outbox relay: the store is not available (%s); retrying", exc)
            except Exception:
                logger.exception("outbox relay: unexpected error; retrying")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(await self._pause_s(drained_at)):
                    await self._woken.wait()

    async def _pause_s(self, drained_at: float) -> float:
        """Until the earliest entry is due, at most ``poll_s``.

        An entry that was due when the drain began and is still here met a broker
        away: it waits for the poll, or the relay would spin.
        """
        try:
            due_at = await self._database.read(next_due_at)
        except DatabaseError:
            return self._poll_s
        if due_at is None or due_at <= drained_at:
            return self._poll_s
        return min(self._poll_s, max(0.0, due_at - time.time()))

    async def drain(self) -> int:
        """Publish due entries, batch after batch, while the publisher is up; how many confirmed."""
        published = 0
        while self._publisher.can_publish:
            done, claimed, broker_away = await self.publish_batch()
            published += done
            if claimed < self._batch or broker_away:
                break
        OUTBOX_PENDING.set(await self._database.read(pending_count))
        OUTBOX_SCHEDULED.set(await self._database.read(scheduled_count))
        return published

    async def publish_batch(self) -> tuple[int, int, bool]:
        """Claim one batch and publish it; ``(confirmed, claimed, the broker is away)``.

        An entry the broker refused (a nack, unroutable, a refused declaration) is
        tried again after a backoff of its own; one that met a broker away (down,
        paused past the confirm bound) is due again at once, and the relay pauses.
        """
        dialect = self._database.dialect

        async def claim(tx: Transaction) -> list[OutboxEntry]:
            return await claim_due(
                tx, dialect, relay=self.name, lease_s=self._lease_s, limit=self._batch
            )

        if not await self._database.read(any_due):
            return 0, 0, False
        entries = await self._database.write(claim)
        if not entries:
            return 0, 0, False
        outcomes = await asyncio.gather(*(self._publish(entry) for entry in entries))
        sent = [e.message_id for e, outcome in zip(entries, outcomes, strict=True) if not outcome]
        failed = [(e, outcome) for e, outcome in zip(entries, outcomes, strict=True) if outcome]
        now = time.time()
        retries = [
            (e.message_id, now + backoff_s(e.attempts, RETRY_BASE_S, self._retry_max_s), error)
            for e, (reason, error) in failed
            if reason != "unavailable"
        ]
        away = [(e.message_id, error) for e, (reason, error) in failed if reason == "unavailable"]

        async def settle(tx: Transaction) -> None:
            await mark_sent(tx, sent)
            await retry_later(tx, retries)
            await release(tx, away)

        await self._database.write(settle)
        OUTBOX_PUBLISHED.inc(len(sent))
        if failed:
            self._report(failed)
        return len(sent), len(entries), bool(away)

    async def _publish(self, entry: OutboxEntry) -> tuple[str, str] | None:
        """None once confirmed, else ``(reason, error)``."""
        try:
            await self._publisher.publish_entry(entry, timeout_s=self._lease_s / 2)
        except Unroutable as exc:
            return "unroutable", str(exc)
        except BrokerUnavailable as exc:
            reason = "nacked" if isinstance(exc.__cause__, PublishNacked) else "unavailable"
            return reason, str(exc)
        except BrokerRefused as exc:
            return "refused", str(exc)
        return None

    @staticmethod
    def _report(failed: list[tuple[OutboxEntry, tuple[str, str]]]) -> None:
        # One line per batch, not per message: a full queue can refuse thousands.
        reasons = Counter(reason for _, (reason, _) in failed)
        for reason, count in reasons.items():
            OUTBOX_RETRIES.labels(reason).inc(count)
        entry, (reason, error) = failed[0]
        log = logger.error if "refused" in reasons else logger.warning
        log(
            "outbox: %d message(s) not published (%s), kept for a later attempt; first: %s (%s)",
            len(failed),
            ", ".join(f"{reason}: {count}" for reason, count in sorted(reasons.items())),
            entry.message_id,
            error,
        )
