"""Why a RabbitMQ node failed to boot, in a few lines read from its logs.

Stdlib only, so it can run before the project's dependencies are installed.
"""

from __future__ import annotations

import re
from pathlib import Path

_MAX_LINES = 12
_MAX_LINE_CHARS = 200  # an Erlang term can fill a screen on one line
_STARTUP_ERROR = ("Error during startup", "Exception during startup")
# Said before the crash reports, and clearer than them (e.g. epmd or a port is unusable).
_HINTS = ("register/listen error", "eaddrinuse")
_ERROR_LEVELS = ("error", "critical", "alert", "emergency")
# "2026-12-07 18:33:32.686810+00:00 [error] <0.223.0> text"
_PREFIX = re.compile(r"^\S+ \S+ \[(\w+)\] <[\d.]+> ?")


def size(path: Path) -> int:
    """Where the next boot's lines will start (the logs are appended to across restarts)."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _lines(path: Path, start: int) -> list[tuple[str, str]]:
    """(level, text) of each line from byte ``start``; level "" where there is no log prefix."""
    try:
        with path.open("rb") as f:
            f.seek(start)
            raw = f.read().decode(errors="replace").splitlines()
    except OSError:
        return []
    lines = []
    for line in raw:
        match = _PREFIX.match(line)
        lines.append((match.group(1), line[match.end() :]) if match else ("", line))
    return lines


def _startup_error(lines: list[tuple[str, str]]) -> list[str]:
    """The "Error (or Exception) during startup" block RabbitMQ writes under BOOT FAILED."""
    texts = [text for _, text in lines]
    for i, text in enumerate(texts):
        if text.startswith(_STARTUP_ERROR):
            block = [text]
            for line in texts[i + 1 :]:
                if not line.strip():
                    if len(block) > 1 or not text.rstrip().endswith(":"):
                        break
                    continue  # "Exception during startup:" has a blank line before its term
                block.append(line)
            return block
    return []


def first_errors(logs: dict[Path, int]) -> list[str]:
    """The first lines that say what went wrong, at most ~12; [] if the logs say nothing.

    ``logs`` maps the start script's console log, then the node's own log, to the
    offset where this boot's lines begin.
    """
    lines_of = {path: _lines(path, start) for path, start in logs.items()}
    return [line[:_MAX_LINE_CHARS] for line in _explanation(list(lines_of.values()))][:_MAX_LINES]


def _explanation(logs: list[list[tuple[str, str]]]) -> list[str]:
    hints = [t for lines in logs for _, t in lines if any(h in t for h in _HINTS)]
    hints = list(dict.fromkeys(hints))  # the console and the node's log may both say it
    for lines in logs:
        block = _startup_error(lines)
        if block:
            # What the node said before giving up (e.g. which setting is unknown) is clearer
            # than the startup error's term; crash reports are not, and hints say it better.
            said = [] if hints else _errors_before_boot_failed(lines)
            return hints + said[:8] + block
    for lines in reversed(logs):
        errors = [text for level, text in lines if level in _ERROR_LEVELS]
        errors += [text for level, text in lines if not level and "Kernel pid terminated" in text]
        if errors:
            return hints + errors
    # Nothing marked as an error: the console's last words (e.g. the start script's own).
    console = logs[0] if logs else []
    return hints + [text for _, text in console if text.strip()][-_MAX_LINES:]


def _errors_before_boot_failed(lines: list[tuple[str, str]]) -> list[str]:
    said: list[str] = []
    for level, text in lines:
        if text.strip() == "BOOT FAILED":
            return said
        if level in _ERROR_LEVELS and text.strip():
            said.append(text)
    return []
