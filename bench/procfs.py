"""CPU, memory and open files of processes, read from /proc (Linux only)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name; [] if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return []
    # The command name may hold spaces and parentheses: split after the last ")".
    return text.rsplit(")", 1)[1].split()


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` (all its threads); 0 if it is gone."""
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS if fields else 0.0


def own_cpu_s() -> float:
    times = os.times()
    return times.user + times.system


def machine_busy_s() -> float:
    """Busy CPU seconds of the whole machine since boot, all cores (first line of /proc/stat)."""
    with open("/proc/stat") as stat:
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(
            int, stat.readline().split()[1:9]
        )
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def descendants(pid: int) -> list[int]:
    """The children and grandchildren of ``pid`` (a worker's pool and its helpers)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields:
                parents[int(entry)] = int(fields[1])
    children = [child for child, parent in parents.items() if parent == pid]
    return children + [child for child, parent in parents.items() if parent in children]


def rss_kb(pid: int | None) -> int | None:
    """Resident set size of ``pid`` in KiB (VmRSS), or None if it cannot be read."""
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def nofile_limit(pid: int) -> int | None:
    """The soft open-files limit of ``pid``."""
    try:
        for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                return int(line.split()[3])
    except (OSError, ValueError):
        pass
    return None


Pids = dict[str, list[int]] | Callable[[], dict[str, list[int]]]


class CpuWindow:
    """CPU seconds spent by named processes and this one between ``begin`` and ``end``.

    ``pids`` maps a name to its processes (a name with none is left out); a
    callable is asked again at each end of the window, for pools whose members
    come and go. Also measured: the cores the rest of the machine kept busy
    meanwhile. It shares the cores, so when that is not near zero the figures
    are lower and noisier than on an idle machine.
    """

    def __init__(self, pids: Pids, own_name: str = "client") -> None:
        self._pids = pids
        self._own_name = own_name
        self.spent: dict[str, float] = {}
        self.wall_s = 0.0
        self.machine_cores = 0.0
        self.others_cores = 0.0

    def _sample(self) -> dict[str, float]:
        pids = self._pids() if callable(self._pids) else self._pids
        found = {name: sum(map(cpu_s, members)) for name, members in pids.items() if members}
        found[self._own_name] = own_cpu_s()
        return found

    def begin(self) -> None:
        self._start = self._sample()
        self._machine_start = machine_busy_s()
        self._started_at = time.monotonic()

    def end(self) -> None:
        """Add this window's CPU to ``spent`` (windows add up), and the machine's share."""
        wall_s = max(time.monotonic() - self._started_at, 1e-9)
        machine_s = machine_busy_s() - self._machine_start
        ours = 0.0
        for name, now in self._sample().items():
            used = now - self._start.get(name, now)
            self.spent[name] = self.spent.get(name, 0.0) + used
            ours += used
        self.wall_s += wall_s
        self.machine_cores = machine_s / wall_s
        self.others_cores = max(0.0, machine_s - ours) / wall_s

    def percent_of_core(self) -> dict[str, float]:
        """``spent`` as % of one core over the windows."""
        return {name: 100 * spent / max(self.wall_s, 1e-9) for name, spent in self.spent.items()}
