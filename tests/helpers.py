"""Helpers shared by tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


async def eventually(
    condition: Callable[[], Awaitable[bool]], timeout_s: float = 60, interval_s: float = 0.1
) -> None:
    """Poll ``condition`` until it holds; only for state that offers no event to await."""
    async with asyncio.timeout(timeout_s):
        while not await condition():  # noqa: ASYNC110  (there is no event to await)
            await asyncio.sleep(interval_s)
