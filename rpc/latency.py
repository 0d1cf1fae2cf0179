"""Per-method call counts and latency histograms over a sliding window, to share and merge.

An rpc server counts its calls by minute (``MethodStats``) and puts the last
``window_s`` in its presence heartbeat (``infra.presence``). A reader sums the
histograms of every server, which is exact (quantiles cannot be averaged,
bucket counts can be added), and reads quantiles off the sum (``quantile``).
The buckets are those of the ``taskgate_rpc_*_seconds`` metrics.
"""

from __future__ import annotations

import math
import time
from bisect import bisect_left
from collections.abc import Iterable
from typing import Any

from .metrics import LATENCY_BUCKETS_S

# Upper bounds in ms, the last one open.
BOUNDS_MS: tuple[float, ...] = (*(b * 1000 for b in LATENCY_BUCKETS_S), math.inf)
SLOT_S = 60.0


class MethodStats:
    """Calls, errors and a latency histogram per method, per minute, for the last ``window_s``."""

    def __init__(self, window_s: float = 900.0) -> None:
        self._window_s = window_s
        # minute -> method -> [calls, errors, count per bucket...]
        self._slots: dict[int, dict[str, list[int]]] = {}

    def observe(
        self, method: str, seconds: float, *, error: bool, now: float | None = None
    ) -> None:
        minute = int((time.time() if now is None else now) // SLOT_S)
        slot = self._slots.get(minute)
        if slot is None:
            slot = self._slots[minute] = {}
            self._drop_old(minute)
        counts = slot.get(method)
        if counts is None:
            counts = slot[method] = [0] * (2 + len(BOUNDS_MS))
        counts[0] += 1
        counts[1] += int(error)
        counts[2 + bisect_left(BOUNDS_MS, seconds * 1000)] += 1

    def window(self, now: float | None = None) -> dict[str, dict[str, Any]]:
        """``{method: {"calls", "errors", "buckets": [counts by BOUNDS_MS]}}`` over the window."""
        now_minute = int((time.time() if now is None else now) // SLOT_S)
        self._drop_old(now_minute)
        oldest = now_minute - self._window_s / SLOT_S
        return merge(slot.items() for minute, slot in self._slots.items() if minute > oldest)

    def _drop_old(self, minute: int) -> None:
        oldest = minute - self._window_s / SLOT_S
        for old in [m for m in self._slots if m <= oldest]:
            del self._slots[old]


def merge(
    windows: Iterable[Iterable[tuple[str, list[int] | dict[str, Any]]]],
) -> dict[str, dict[str, Any]]:
    """The sum of several windows (``MethodStats.window`` items, or raw slot counts)."""
    total: dict[str, list[int]] = {}
    for window in windows:
        for method, counts in window:
            flat = (
                [counts["calls"], counts["errors"], *counts["buckets"]]
                if isinstance(counts, dict)
                else counts
            )
            if len(flat) != 2 + len(BOUNDS_MS):
                continue  # another version's buckets: not comparable
            into = total.setdefault(method, [0] * len(flat))
            for i, count in enumerate(flat):
                into[i] += int(count)
    return {
        method: {"calls": c[0], "errors": c[1], "buckets": c[2:]}
        for method, c in sorted(total.items())
    }


def quantile(buckets: list[int], q: float) -> float | None:
    """The ``q`` quantile in ms, interpolated in its bucket (the open bucket: its lower
    bound); None without calls."""
    total = sum(buckets)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for i, count in enumerate(buckets):
        if count and seen + count >= rank:
            low = 0.0 if i == 0 else BOUNDS_MS[i - 1]
            high = BOUNDS_MS[i]
            if math.isinf(high):
                return low
            return low + (high - low) * max(0.0, rank - seen) / count
        seen += count
    return BOUNDS_MS[-2]
