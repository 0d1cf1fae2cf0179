"""``GET /admin/api/history?minutes=15``: per kind and step, tasks queued and in flight (as
sampled) and tasks done and failed (from the tasks' ends), for the admin page's charts.

Queue depths are not in the store, so they are sampled (``HistorySampler``):
every ADMIN_HISTORY_STEP_S each web process tries to claim the step (one
insert that only one process wins); the winner takes an overview sample and
writes one row per kind. So the history costs one sample per step however many
gateways run, survives their restarts, and every page sees the same. Done and
failed are counted from the tasks table at read time (``tasks_finished``).
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
from .overview import FAILED_STATES, FINISHED, Overview

logger = logging.getLogger(__name__)

DEFAULT_MINUTES = 15
MAX_MINUTES = 60
# Samples are kept a little longer than the longest history asked for.
KEEP_S = (MAX_MINUTES + 5) * 60.0


class HistorySampler:
    """Writes a sample per step when this process wins the step; ``start()``, ``close()``."""

    def __init__(self, database: Database, overview: Overview, *, step_s: float) -> None:
        self._database = database
        self._overview = overview
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

        async def write(tx: Transaction) -> None:
            await tx.executemany(
                "INSERT INTO admin_samples (at, kind, queued, in_flight) VALUES ($1, $2, $3, $4)"
                " ON CONFLICT (at, kind) DO NOTHING",
                rows,
            )

        await self._database.write(write)
        return True


async def history(database: Database, *, minutes: int, step_s: float) -> dict[str, Any]:
    """The points of the last ``minutes``, oldest first, one per step."""
    now = time.time()
    first = math.floor((now - minutes * 60.0) / step_s) * step_s
    # floor() is not built into every SQLite; a cast truncates, which is floor for times.
    bucket = (
        "floor(updated_at / $2)"
        if database.dialect == "postgresql"
        else ("CAST(updated_at / $2 AS INTEGER)")
    )

    async def read(tx: Transaction) -> tuple[list[Any], list[Any]]:
        samples = await tx.fetch(
            "SELECT at, kind, queued, in_flight FROM admin_samples WHERE at >= $1", first
        )
        ends = await tx.fetch(
            f"SELECT kind, state, {bucket} AS step, count(*) FROM tasks"
            f" WHERE {FINISHED} AND updated_at >= $1 GROUP BY kind, state, step",
            first,
            step_s,
        )
        return samples, ends

    samples, ends = await database.read(read)
    points: dict[float, dict[str, dict[str, int]]] = {}
    steps = int((now - first) // step_s) + 1
    for n in range(steps):
        points[round(first + n * step_s, 6)] = {}

    def figures(at: float, kind: str) -> dict[str, int] | None:
        point = points.get(round(at, 6))
        if point is None:
            return None
        return point.setdefault(kind, {"queued": 0, "in_flight": 0, "done": 0, "failed": 0})

    for at, kind, queued, in_flight in samples:
        if (found := figures(float(at), kind)) is not None:
            found["queued"], found["in_flight"] = int(queued), int(in_flight)
    for kind, state, step, count in ends:
        if state != "succeeded" and state not in FAILED_STATES:
            continue
        if (found := figures(float(step) * step_s, kind)) is not None:
            found["done" if state == "succeeded" else "failed"] += int(count)
    return {
        "step_s": step_s,
        "points": [{"at": at, "kinds": kinds} for at, kinds in sorted(points.items())],
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
