"""A worker's slots: a freed slot goes to high work first, and a cancelled waiter leaks none."""

from __future__ import annotations

import asyncio

from workers.slots import PrioritySlots
from workers.topology import Priority


async def test_a_freed_slot_goes_to_the_oldest_high_waiter_first():
    slots = PrioritySlots(1)
    order: list[str] = []
    release = asyncio.Event()

    async def job(name: str, priority: Priority) -> None:
        async with slots.take(priority):
            order.append(name)
            if name == "first":
                await release.wait()

    first = asyncio.create_task(job("first", "normal"))
    await asyncio.sleep(0)  # first holds the slot
    waiting = [
        asyncio.create_task(job(name, priority))
        for name, priority in [("n1", "normal"), ("h1", "high"), ("n2", "normal"), ("h2", "high")]
    ]
    await asyncio.sleep(0)  # all four wait
    release.set()
    await asyncio.gather(first, *waiting)
    assert order == ["first", "h1", "h2", "n1", "n2"]


async def test_a_waiter_cancelled_while_handed_a_slot_passes_it_on():
    slots = PrioritySlots(1)
    async with slots.take("normal"):
        cancelled = asyncio.create_task(_take(slots, "high"))
        later = asyncio.create_task(_take(slots, "normal"))
        await asyncio.sleep(0)  # both wait
    # The slot was just handed to ``cancelled``, which has not run since.
    cancelled.cancel()
    await asyncio.wait_for(later, 5)  # the slot went on to it
    assert cancelled.cancelled()
    await asyncio.wait_for(_take(slots, "normal"), 5)  # and came back free


async def _take(slots: PrioritySlots, priority: Priority) -> None:
    async with slots.take(priority):
        pass
