"""SIGTERM reaches the streams before uvicorn waits for connections to close.

uvicorn stops accepting on SIGTERM, then waits for open connections, and only
then runs the app's shutdown: an SSE stream never closes by itself, so
without this the wait would last until its timeout. ``Server`` tells the
callbacks registered here as soon as the signal arrives.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import FrameType

import uvicorn

_callbacks: list[tuple[asyncio.AbstractEventLoop, Callable[[], None]]] = []


def on_exit_signal(callback: Callable[[], None]) -> Callable[[], None]:
    """Run ``callback`` on this event loop when the server is told to exit; returns an undo."""
    entry = (asyncio.get_running_loop(), callback)
    _callbacks.append(entry)
    return lambda: _callbacks.remove(entry) if entry in _callbacks else None


class Server(uvicorn.Server):
    """uvicorn's server, telling ``on_exit_signal`` callbacks when a signal asks it to exit."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        for loop, callback in list(_callbacks):
            # A signal handler interrupts the loop's thread anywhere: hand over, do not call.
            loop.call_soon_threadsafe(callback)
