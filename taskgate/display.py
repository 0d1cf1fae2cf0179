"""How a task's status events look on the terminal: one line per state on stdout, the
progress bar and notices on stderr."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from .output import print_json
from .progress import ProgressBar


def status_line(event: Mapping[str, Any]) -> str:
    """``running    attempt 1``, ``retrying   attempt 2  in 1.0 s  error: ...``"""
    parts = [f"{event.get('state', '?'):<10} attempt {event.get('attempt', '?')}"]
    if event.get("percent") is not None:
        parts.append(f"{event['percent']:.0f}%")
    if event.get("message"):
        parts.append(str(event["message"]))
    if event.get("retry_in_ms") is not None:
        parts.append(f"in {event['retry_in_ms'] / 1000:.1f} s")
    if event.get("error"):
        parts.append(f"error: {event['error']}")
    return "  ".join(parts)


class TaskDisplay:
    """Shows one task as its events arrive."""

    def __init__(self, bar: ProgressBar | None = None) -> None:
        self._bar = bar if bar is not None else ProgressBar()

    def progress(self, event: Mapping[str, Any]) -> None:
        self._bar.update(float(event.get("percent") or 0.0), event.get("message"))

    def state(self, event: Mapping[str, Any]) -> None:
        """A state change: its line, and for a task that succeeded its result."""
        if event.get("state") == "succeeded":
            # Workers publish no progress for short jobs and none at 100%: success fills the bar.
            self._bar.update(100.0)
        self._bar.clear()
        print(status_line(event), flush=True)
        if event.get("state") == "succeeded" and event.get("result") is not None:
            print_json(event["result"])

    def notice(self, text: str) -> None:
        """Something about the connection, not the task (stderr)."""
        self._bar.clear()
        print(text, file=sys.stderr, flush=True)
