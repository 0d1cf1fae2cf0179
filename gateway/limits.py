"""Caps on open SSE streams, per user and per process.

A stream holds a slot for as long as its response runs; ``limited`` wraps the
response so the slot is returned however the response ends (finished, client
gone, cancelled at shutdown).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import RETRY_AFTER_S, HttpError


class StreamLimiter:
    def __init__(self, *, per_user: int, per_process: int) -> None:
        self._per_user = per_user
        self._per_process = per_process
        self._by_user: Counter[str] = Counter()
        self._total = 0

    @property
    def open_streams(self) -> int:
        return self._total

    def acquire(self, user_id: str) -> None:
        """Take a slot; 429 past the user's cap, 503 past the process's (both with Retry-After)."""
        retry = {"Retry-After": str(RETRY_AFTER_S)}
        if self._by_user[user_id] >= self._per_user:
            raise HttpError(
                429,
                "too_many_streams",
                f"at most {self._per_user} open streams per user",
                headers=retry,
            )
        if self._total >= self._per_process:
            raise HttpError(
                503, "too_many_streams", "this gateway holds all the streams it can", headers=retry
            )
        self._by_user[user_id] += 1
        self._total += 1

    def release(self, user_id: str) -> None:
        self._by_user[user_id] -= 1
        if self._by_user[user_id] <= 0:
            del self._by_user[user_id]
        self._total -= 1

    def limited(self, user_id: str, response: ASGIApp) -> Response:
        """``response`` holding one of ``user_id``'s slots until it ends."""
        self.acquire(user_id)
        return _Releasing(response, lambda: self.release(user_id))


class _Releasing(Response):
    """An ASGI response that runs ``release`` when the wrapped one ends, however it ends."""

    def __init__(self, inner: ASGIApp, release: Callable[[], None]) -> None:
        self._inner = inner
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._inner(scope, receive, send)
        finally:
            self._release()
