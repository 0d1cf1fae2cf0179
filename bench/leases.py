"""Benchmark: what task leases cost the store (issue 18, point 4).

A worker renews the leases of all the tasks it holds in one statement every
third of TASK_LEASE_S; every web process scans for expired ones as often. This
times, on a store of its own (a SQLite file in a temporary directory, or
DATABASE_URL), one renewal of N held leases (each claim carrying a 200-byte
task message) and one watchdog scan among M claims of which none expired:

    python bench/leases.py                      # N = 16 and 256, M = 10,000
    DATABASE_URL=postgresql://... python bench/leases.py
    python bench/leases.py --tiny               # seconds: checks that it works
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import check_measured  # noqa: E402
from infra.database import Database, Transaction, open_database  # noqa: E402
from workers import claims  # noqa: E402

BODY = b"x" * 200


async def fill(database: Database, holder: str, count: int, lease_s: float) -> list[str]:
    ids = [f"{holder}-{n}" for n in range(count)]
    held = claims.Held("bench.kind", BODY, 1)

    async def take_all(tx: Transaction) -> None:
        for item_id in ids:
            await claims.take(tx, "task", item_id, holder, time.time(), lease_s, held)

    await database.write(take_all)
    return ids


async def p50_ms(rounds: int, work) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        await work()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


async def main(tiny: bool) -> int:
    held_counts = (16,) if tiny else (16, 256)
    others = 100 if tiny else 10_000
    rounds = 5 if tiny else 200
    with tempfile.TemporaryDirectory() as tmp:
        database = await open_database(os.environ.get("DATABASE_URL") or str(Path(tmp) / "b.db"))
        try:
            await database.migrate(claims.COMPONENT, claims.MIGRATIONS)
            await fill(database, "others", others, 3600.0)
            measured: dict[str, float] = {}
            for count in held_counts:
                ids = await fill(database, f"worker{count}", count, 30.0)

                async def renew(ids: list[str] = ids, count: int = count) -> None:
                    kept = await database.write(
                        lambda tx: claims.renew(tx, "task", ids, f"worker{count}", time.time() + 30)
                    )
                    assert len(kept) == len(ids)

                measured[f"renew_ms.{count}"] = await p50_ms(rounds, renew)

            async def scan() -> None:
                await database.read(lambda tx: claims.expired(tx, "task", time.time(), 200))

            measured[f"scan_ms.{others}"] = await p50_ms(rounds, scan)
        finally:
            await database.close()
    for name, value in measured.items():
        print(f"{name:>16}: p50 {value:.3f} ms")
    return check_measured(measured)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="a few rounds: checks that it works")
    sys.exit(asyncio.run(main(parser.parse_args().tiny)))
