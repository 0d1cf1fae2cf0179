"""``GET /admin/api/overview``: per kind queue depths, work in flight, oldest wait and
throughput; the workers and rpc servers online; RPC latency per method.

A sample costs one read transaction of four statements (presence, kinds,
claims, oldest queued: bench/admin.py, 1-5 ms at 100,000 tasks), whatever the
number of tasks, and three passive ``queue.declare`` per kind on one channel
(each answers the queue's ready messages and consumers; RabbitMQ asks no
permission for it, 3.10 and 4.x alike, and the web user declares those queues
anyway). Done and failed per minute are counted from the live feed
(``throughput``). Every caller on this process within ADMIN_SAMPLE_S shares one
sample: a hundred open admin pages cost what one does.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from infra.background import cancel_and_wait
from infra.database import Database, Migration, Transaction
from infra.presence import Present, online
from rpc.connection import close_channels
from rpc.wire import Channel, RobustChannel, WireConnection, WireError
from workers import kinds
from workers.topology import dead_queue, task_queue

from ..openapi import documented
from . import presence
from .access import require_admin
from .api_types import OverviewView
from .throughput import Throughput

logger = logging.getLogger(__name__)

COMPONENT = "admin"
MIGRATIONS: list[Migration] = [
    # One row per history step and kind (history.py); the first web process to claim a step
    # samples it for all.
    "CREATE TABLE IF NOT EXISTS admin_steps (at DOUBLE PRECISION PRIMARY KEY);"
    "CREATE TABLE IF NOT EXISTS admin_samples (at DOUBLE PRECISION NOT NULL,"
    " kind TEXT NOT NULL, queued BIGINT NOT NULL, in_flight BIGINT NOT NULL,"
    " done BIGINT NOT NULL DEFAULT 0, failed BIGINT NOT NULL DEFAULT 0,"
    " PRIMARY KEY (at, kind))",
]
RATE_WINDOW_S = 60.0


@dataclass(frozen=True, slots=True)
class Depth:
    messages: int
    consumers: int


class Overview:
    """The latest overview, sampled on demand at most every ``sample_s``; attach ``start``
    to the broker link."""

    def __init__(
        self,
        database: Database,
        throughput: Throughput,
        *,
        sample_s: float,
        presence_interval_s: float,
    ) -> None:
        self._database = database
        self._throughput = throughput
        self._sample_s = sample_s
        self._gone_after_s = presence.MISSED_BEATS * presence_interval_s
        self._channel: RobustChannel | None = None
        self._latest: dict[str, Any] | None = None
        self._taken = -math.inf  # loop time of the latest sample
        self._sampling: asyncio.Task[dict[str, Any]] | None = None

    async def start(self, connection: WireConnection) -> None:
        if self._channel is None:
            self._channel = await connection.open_channel(_nothing_to_declare)

    async def close(self) -> None:
        await cancel_and_wait(self._sampling)
        await close_channels(self._channel)
        self._channel = None

    async def latest(self) -> dict[str, Any]:
        """A sample at most ``sample_s`` old; callers at once share one."""
        loop = asyncio.get_running_loop()
        if self._latest is not None and loop.time() - self._taken < self._sample_s:
            return self._latest
        if self._sampling is None or self._sampling.done():
            self._sampling = loop.create_task(self._sample(), name="admin-overview")
        # Shielded: a caller that goes away does not cancel the others' sample.
        return await asyncio.shield(self._sampling)

    async def _sample(self) -> dict[str, Any]:
        started = asyncio.get_running_loop().time()
        overview = await self.sample()
        self._latest, self._taken = overview, started
        return overview

    async def sample(self) -> dict[str, Any]:
        now = time.time()
        store = await self._database.read(lambda tx: _from_store(tx, now, self._gone_after_s))
        depths = await self._depths(store.kinds)
        ends = self._throughput.between(now - RATE_WINDOW_S, now)
        return {
            "at": now,
            "kinds": [
                {
                    "kind": kind,
                    "queued": _messages(depths.get(task_queue(kind))),
                    "queued_high": _messages(depths.get(task_queue(kind, "high"))),
                    "in_flight": store.in_flight.get(kind, 0),
                    "oldest_queued_s": (
                        None
                        if (oldest := store.oldest.get(kind)) is None
                        else max(0.0, now - oldest)
                    ),
                    "dead": _messages(depths.get(dead_queue(kind))),
                    "done_per_min": ends.get(kind, (0, 0))[0] * 60.0 / RATE_WINDOW_S,
                    "failed_per_min": ends.get(kind, (0, 0))[1] * 60.0 / RATE_WINDOW_S,
                }
                for kind in store.kinds
            ],
            "workers": presence.workers(store.present),
            "rpc_servers": presence.rpc_servers(store.present),
            "rpc_methods": presence.rpc_methods(store.present),
        }

    async def _depths(self, kind_names: list[str]) -> dict[str, Depth]:
        """The broker's figures of each kind's queues; those it could not give are left out
        (a queue that does not exist closes the channel: it reopens for the next sample)."""
        found: dict[str, Depth] = {}
        channel = self._channel.raw if self._channel is not None else None
        for kind in kind_names:
            for queue in (task_queue(kind), task_queue(kind, "high"), dead_queue(kind)):
                if channel is None or channel.is_closed:
                    return found
                try:
                    ok = await channel.queue_declare(queue, passive=True)
                except WireError as exc:
                    logger.info("no figures for queue %s: %s", queue, exc)
                    continue
                found[queue] = Depth(ok.message_count or 0, ok.consumer_count or 0)
        return found


@dataclass(frozen=True, slots=True)
class _StoreFigures:
    kinds: list[str]
    in_flight: dict[str, int]
    oldest: dict[str, float]
    present: list[Present]


async def _from_store(tx: Transaction, now: float, gone_after_s: float) -> _StoreFigures:
    present = await online(tx, seen_after=now - gone_after_s)
    registered = sorted(await kinds.registered(tx))
    if not registered:  # no worker ever started: worker_claims may not exist yet
        return _StoreFigures([], {}, {}, present)
    in_flight = {
        row[0]: int(row[1])
        for row in await tx.fetch(
            "SELECT kind, count(*) FROM worker_claims WHERE scope = 'task' AND until_s >= $1"
            " AND kind IS NOT NULL GROUP BY kind",
            now,
        )
    }
    # Per kind, the first entry of the (kind, state, created_at) index: one step each.
    oldest = {
        row[0]: float(row[1])
        for row in await tx.fetch(
            "SELECT k.kind, (SELECT min(t.created_at) FROM tasks t"
            " WHERE t.kind = k.kind AND t.state = 'queued') FROM task_kinds k"
        )
        if row[1] is not None
    }
    return _StoreFigures(registered, in_flight, oldest, present)


def _messages(depth: Depth | None) -> int:
    return 0 if depth is None else depth.messages


async def _nothing_to_declare(channel: Channel) -> None:
    pass


@documented("Queues, workers and RPC servers now", responses={200: OverviewView}, auth="admin")
async def get_overview(request: Request) -> JSONResponse:
    require_admin(request)
    overview: Overview = request.app.state.admin_overview
    return JSONResponse(await overview.latest())
