"""``GET /admin/api/history?minutes=15``: per kind and step, tasks queued and in flight (as
sampled at the step's start) and tasks done and failed (in the step), for the admin
page's charts.

Every ADMIN_HISTORY_STEP_S each web process tries to claim the step (one insert
that only one process wins, ``HistorySampler``); the winner takes an overview
sample and writes a row per kind, with the ends of the step before from its
live-feed counts (``throughput``). So the history costs one sample per step
however many gateways run, survives their restarts, and every page sees the
same; reading it is one indexed range of rows.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Annotated, Any

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse

from infra.background import cancel_and_wait
from infra.database import Database, DatabaseError, Transaction

from ..errors import HttpError
from ..openapi import documented
from .access import require_admin
from .api_types import HistoryView
from .overview import Overview
from .throughput import Throughput

logger = logging.getLogger(__name__)

DEFAULT_MINUTES = 15
MAX_MINUTES = 60
# Samples are kept a little longer than the longest history asked for.
KEEP_S = (MAX_MINUTES + 5) * 60.0


class HistorySampler:
    """Writes a sample per step when this process wins the step; ``start()``, ``close()``."""

    def __init__(
        self, database: Database, overview: Overview, throughput: Throughput, *, step_s: float
    ) -> None:
        self._database = database
        self._overview = overview
        self._throughput = throughput
        self.step_s = step_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="admin-history")

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _run(self) -> None:
        while True:
            step = math.floor(time.time() / self.step_s) * self.step_s
            try:
                await self.sample(step)
            except DatabaseError as exc:  # a gap in the charts, not an outage
                logger.warning("admin history step not sampled: %s", exc)
            await asyncio.sleep(max(0.0, step + self.step_s - time.time()))

    async def sample(self, step: float) -> bool:
        """Sample ``step`` unless another process claimed it; whether this one did."""

        async def claim(tx: Transaction) -> bool:
            await tx.execute("DELETE FROM admin_samples WHERE at < $1", step - KEEP_S)
            await tx.execute("DELETE FROM admin_steps WHERE at < $1", step - KEEP_S)
            won = await tx.fetchval(
                "INSERT INTO admin_steps (at) VALUES ($1) ON CONFLICT (at) DO NOTHING RETURNING at",
                step,
            )
            return won is not None

        if not await self._database.write(claim):
            return False
        overview = await self._overview.latest()
        rows = [
            (step, k["kind"], k["queued"] + k["queued_high"], k["in_flight"])
            for k in overview["kinds"]
        ]
        ends = [
            (step - self.step_s, kind, done, failed)
            for kind, (done, failed) in self._throughput.between(step - self.step_s, step).items()
        ]

        async def write(tx: Transaction) -> None:
            await tx.executemany(
                "INSERT INTO admin_samples (at, kind, queued, in_flight) VALUES ($1, $2, $3, $4)"
                " ON CONFLICT (at, kind) DO NOTHING",
                rows,
            )
            # The step before has ended: its counts are complete (a kind without a sample
            # then gets a row of its own).
            await tx.executemany(
                "INSERT INTO admin_samples (at, kind, queued, in_flight, done, failed)"
                " VALUES ($1, $2, 0, 0, $3, $4) ON CONFLICT (at, kind) DO UPDATE"
                " SET done = excluded.done, failed = excluded.failed",
                ends,
            )

        await self._database.write(write)
        return True


async def history(database: Database, *, minutes: int, step_s: float) -> dict[str, Any]:
    """The points of the last ``minutes``, oldest first, one per step."""
    now = time.time()
    first = math.floor((now - minutes * 60.0) / step_s) * step_s
    rows = await database.read(
        lambda tx: tx.fetch(
            "SELECT at, kind, queued, in_flight, done, failed FROM admin_samples WHERE at >= $1",
            first,
        )
    )
    points: dict[int, dict[str, dict[str, int]]] = {
        n: {} for n in range(int((now - first) // step_s) + 1)
    }
    for at, kind, queued, in_flight, done, failed in rows:
        point = points.get(round((float(at) - first) / step_s))
        if point is not None:
            point[kind] = {
                "queued": int(queued),
                "in_flight": int(in_flight),
                "done": int(done),
                "failed": int(failed),
            }
    return {
        "step_s": step_s,
        "points": [{"at": first + n * step_s, "kinds": kinds} for n, kinds in points.items()],
    }


@documented(
    "Per-kind figures over the last minutes",
    responses={200: HistoryView},
    errors=(400,),
    auth="admin",
    query={"minutes": Annotated[int, msgspec.Meta(ge=1, le=MAX_MINUTES)]},
)
async def get_history(request: Request) -> JSONResponse:
    require_admin(request)
    text = request.query_params.get("minutes", str(DEFAULT_MINUTES))
    if not text.isdigit() or not 1 <= int(text) <= MAX_MINUTES:
        raise HttpError(
            400,
            "invalid_query",
            f"minutes: a whole number from 1 to {MAX_MINUTES}",
            path="$.minutes",
        )
    sampler: HistorySampler = request.app.state.admin_history
    return JSONResponse(
        await history(request.app.state.database, minutes=int(text), step_s=sampler.step_s)
    )
