"""The one exception commands raise to stop with a message for the user."""

from __future__ import annotations

from . import exits


class CommandError(Exception):
    """Stops the command: ``main`` prints ``error: <message>`` on stderr and exits ``code``."""

    def __init__(self, message: str, code: int = exits.FAILURE) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def usage_error(message: str) -> CommandError:
    """A problem with the command line or its environment (exit 2)."""
    return CommandError(message, exits.USAGE)
