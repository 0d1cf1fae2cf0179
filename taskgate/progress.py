"""A text progress bar on stderr: redrawn in place on a terminal, one line per update elsewhere."""

from __future__ import annotations

import shutil
import sys
from typing import TextIO

BAR_WIDTH = 30
# Erase from the cursor to the end of the line (ANSI), so a shorter line leaves no tail.
_ERASE_LINE = "\x1b[K"


def render_bar(percent: float, message: str | None = None, width: int = BAR_WIDTH) -> str:
    """``[#########---------------------]  30%  message``"""
    percent = min(max(percent, 0.0), 100.0)
    filled = round(width * percent / 100)
    bar = f"[{'#' * filled}{'-' * (width - filled)}] {percent:3.0f}%"
    return f"{bar}  {message}" if message else bar


class ProgressBar:
    """The bar of one task.

    On a terminal it is redrawn in place with ``\\r``; anywhere else (a pipe, a log
    file) each update is its own line, since a ``\\r`` there would only garble the file.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._in_place = self._stream.isatty()
        self._drawn = False

    def update(self, percent: float, message: str | None = None) -> None:
        line = render_bar(percent, message)
        if self._in_place:
            # A line longer than the terminal wraps, and \r would then redraw only its tail.
            line = line[: shutil.get_terminal_size().columns - 1]
            self._stream.write(f"\r{line}{_ERASE_LINE}")
            self._drawn = True
        else:
            self._stream.write(line + "\n")
        self._stream.flush()

    def clear(self) -> None:
        """Take the bar off the screen, so the next line printed starts on a clean line."""
        if self._drawn:
            self._stream.write(f"\r{_ERASE_LINE}")
            self._stream.flush()
            self._drawn = False
