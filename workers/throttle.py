"""Rate-limiting a job's progress reports before they become status events."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class ProgressThrottle:
    """Passes reports on to ``send`` at most once per ``interval_s``, counted from creation.

    Reports within an interval are coalesced: the latest goes out when the
    interval ends, unless :meth:`close` comes first (the job ended, and what the
    task publishes next supersedes it). So a job shorter than one interval
    publishes no progress at all: each event is a broker round trip and a wake-up
    of a worker whose cores are busy with the jobs, and a progress bar gains
    nothing from more than a few updates a second.
    """

    def __init__(
        self,
        send: Callable[[float, str], None],
        interval_s: float,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._send = send
        self._interval_s = interval_s
        self._loop = loop
        self._sent_at = loop.time()
        self._held: tuple[float, str] | None = None
        self._timer: asyncio.TimerHandle | None = None

    def __call__(self, percent: float, message: str) -> None:
        if self._timer is None and self._loop.time() - self._sent_at >= self._interval_s:
            self._sent_at = self._loop.time()
            self._send(percent, message)
            return
        self._held = (percent, message)
        if self._timer is None:
            self._timer = self._loop.call_at(self._sent_at + self._interval_s, self._release)

    def close(self) -> None:
        """Drop a held report; send nothing more."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._held = None

    def _release(self) -> None:
        self._timer = None
        held, self._held = self._held, None
        if held is not None:
            self._sent_at = self._loop.time()
            self._send(*held)
