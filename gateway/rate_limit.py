"""A per-user token bucket: a burst at once, then a steady rate (429 with Retry-After beyond).

In-process: with several web processes a user gets each process's allowance.
(A shared limit would cost a store write per request; what it guards, a flood
from one client, lands on one process per connection anyway.)
"""

from __future__ import annotations

import math
import time

from .errors import HttpError

# Users whose buckets refilled are dropped once this many are held.
MAX_USERS = 10_000


class RateLimiter:
    def __init__(self, *, per_minute: float, burst: int) -> None:
        self._rate_per_s = per_minute / 60
        self._burst = burst
        # user -> (tokens, when they were counted)
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, user_id: str, what: str) -> None:
        """Spend one of ``user_id``'s tokens, or 429 with the seconds until the next one."""
        now = time.monotonic()
        tokens, then = self._buckets.get(user_id, (float(self._burst), now))
        tokens = min(float(self._burst), tokens + (now - then) * self._rate_per_s)
        if tokens < 1:
            wait_s = math.inf if self._rate_per_s <= 0 else (1 - tokens) / self._rate_per_s
            retry_after = str(max(1, math.ceil(min(wait_s, 86_400))))
            raise HttpError(
                429,
                "rate_limited",
                f"too many {what}: at most {self._burst} at once, then "
                f"{self._rate_per_s * 60:g} a minute",
                headers={"Retry-After": retry_after},
            )
        if len(self._buckets) >= MAX_USERS and user_id not in self._buckets:
            self._forget_full(now)
        self._buckets[user_id] = (tokens - 1, now)

    def _forget_full(self, now: float) -> None:
        for user_id, (tokens, then) in list(self._buckets.items()):
            if tokens + (now - then) * self._rate_per_s >= self._burst:
                del self._buckets[user_id]
