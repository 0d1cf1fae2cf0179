"""Tasks ended per kind and second, counted from the recorded events this process's live feed
hands its hub.

Every web process gets every recorded event (``status.recorded`` is a fanout),
so each counts the same ends without a read: the overview's per-minute rates
cost nothing, and the history sampler writes each step's counts to the store
(``gateway.admin.history``), where they outlive the process. Counting in the
store instead needs the tasks table indexed by end time: an index on
``updated_at``, which every event rewrites, takes PostgreSQL's in-place (HOT)
updates away from progress events: bench/admin.py --record, 8-15 % fewer events
recorded per second. A web process counts from its start, and misses what its
live queue missed (bounded, like the streams' live events).
"""

from __future__ import annotations

import time

import msgspec

from workers.messages import TERMINAL_STATES

from ..store import StoredEvent

FAILED_STATES = frozenset({"failed", "dead"})
# Seconds of counts kept: the rate's minute and the history's step that just ended.
KEEP_S = 600.0


class _Kind(msgspec.Struct):
    kind: str


_kind_decoder = msgspec.json.Decoder(_Kind)


class Throughput:
    """Done and failed tasks per kind, by tick; ``count`` is a hub tap.

    ``tick_s`` must divide the history's step, so a step is a whole number of ticks.
    """

    def __init__(self, tick_s: float = 1.0) -> None:
        self._tick_s = tick_s
        # tick -> kind -> [done, failed]
        self._ticks: dict[int, dict[str, list[int]]] = {}

    def count(self, event: StoredEvent) -> None:
        if event.state not in TERMINAL_STATES or event.state == "cancelled":
            return
        try:
            kind = _kind_decoder.decode(event.body).kind
        except msgspec.DecodeError:
            return
        tick = int(time.time() // self._tick_s)
        slot = self._ticks.get(tick)
        if slot is None:
            slot = self._ticks[tick] = {}
            oldest = tick - KEEP_S / self._tick_s
            for old in [t for t in self._ticks if t <= oldest]:
                del self._ticks[old]
        counts = slot.setdefault(kind, [0, 0])
        counts[1 if event.state in FAILED_STATES else 0] += 1

    def between(self, start: float, end: float) -> dict[str, tuple[int, int]]:
        """Kind -> (done, failed) of the ticks that start in ``[start, end)``."""
        first, last = round(start / self._tick_s), round(end / self._tick_s)
        total: dict[str, tuple[int, int]] = {}
        for tick, slot in self._ticks.items():
            if first <= tick < last:
                for kind, (done, failed) in slot.items():
                    before = total.get(kind, (0, 0))
                    total[kind] = (before[0] + done, before[1] + failed)
        return total
