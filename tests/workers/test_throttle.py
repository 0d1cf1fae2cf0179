"""ProgressThrottle on a real event loop."""

from __future__ import annotations

import asyncio

from workers.throttle import ProgressThrottle


async def test_the_latest_report_of_an_interval_goes_out_when_it_ends():
    sent: list[tuple[float, str]] = []
    first = asyncio.Event()

    def send(percent: float, message: str) -> None:
        sent.append((percent, message))
        first.set()

    throttle = ProgressThrottle(send, 0.05, asyncio.get_running_loop())
    throttle(10, "a")
    throttle(20, "b")
    throttle(30, "c")
    assert sent == []

    await asyncio.wait_for(first.wait(), 10)
    assert sent == [(30, "c")]


async def test_close_drops_a_held_report():
    sent: list[tuple[float, str]] = []
    throttle = ProgressThrottle(lambda p, m: sent.append((p, m)), 3600, asyncio.get_running_loop())
    throttle(10, "a")
    throttle(20, "b")
    throttle.close()

    assert sent == []


async def test_a_zero_interval_passes_every_report_at_once():
    sent: list[tuple[float, str]] = []
    throttle = ProgressThrottle(lambda p, m: sent.append((p, m)), 0, asyncio.get_running_loop())
    for i in range(3):
        throttle(i, str(i))

    assert sent == [(0, "0"), (1, "1"), (2, "2")]
