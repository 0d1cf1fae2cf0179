"""``/healthz`` (the process is up) and ``/readyz`` (it can take work now).

Ready means a publish would be confirmed and a write would commit, each within
its bound: the broker confirms a probe message on the publishing channel and
the store commits a probe row. Being connected is not enough: a paused broker
keeps its sockets open, and a read-only or locked store still answers reads.
A broker that blocks publishers (a memory or disk alarm) is "blocked" at once.
And recording keeps up: no event this process's recorder holds has waited
beyond its bound, and the journal shards hold no more than theirs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Literal, Protocol

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse

from infra.background import cancel_and_wait
from rpc.errors import BrokerUnavailable
from rpc.wire import PublishBlocked

from .errors import RETRY_AFTER_S
from .openapi import documented
from .publisher import Publisher
from .store import StoreUnavailable, TaskStore

logger = logging.getLogger(__name__)


class _Link(Protocol):
    @property
    def ready(self) -> bool: ...


class _Recording(Protocol):
    def lag_s(self) -> float: ...

    @property
    def backlog(self) -> int: ...


class Readiness:
    """Runs the checks, both at once and each within ``timeout_s``, and keeps the answer.

    A load balancer polls /readyz from every instance every second or so, and each
    check costs a broker round trip and a store commit: an answer is reused for
    ``cache_s``, and polls that arrive while a check runs wait for that one, so
    polling adds at most one probe publish and one probe commit per ``cache_s``.
    """

    def __init__(
        self,
        *,
        links: tuple[_Link, ...],
        publisher: Publisher,
        store: TaskStore,
        recording: _Recording | None = None,
        max_lag_s: float = 10.0,
        max_backlog: int = 10_000,
        timeout_s: float,
        cache_s: float,
    ) -> None:
        self._links = links
        self._publisher = publisher
        self._store = store
        self._recording = recording
        self._max_lag_s = max_lag_s
        self._max_backlog = max_backlog
        self._timeout_s = timeout_s
        self._cache_s = cache_s
        self._answer: dict[str, object] | None = None
        self._answered_at = 0.0
        self._running: asyncio.Task[dict[str, object]] | None = None

    async def answer(self) -> dict[str, object]:
        """``{"status": "ready" | "unavailable", "broker": ..., "store": ..., "recording": ...}``.

        ``broker`` is ``connected``, ``disconnected``, ``blocked`` or ``unresponsive``;
        ``recording`` is ``ok``, ``behind`` or ``unknown`` (not connected).
        """
        if self._answer is not None and time.monotonic() - self._answered_at < self._cache_s:
            return self._answer
        if self._running is None or self._running.done():
            self._running = asyncio.create_task(self._check(), name="readiness-check")
        # Shielded: a poller that hangs up must not cancel the check the others wait for.
        return await asyncio.shield(self._running)

    async def close(self) -> None:
        await cancel_and_wait(self._running)

    async def _check(self) -> dict[str, object]:
        checks = await asyncio.gather(
            self._check_broker(), self._check_store(), self._check_recording()
        )
        names = ("broker", "store", "recording")
        answer: dict[str, object] = {"status": "ready"}
        answer.update((name, state) for name, (state, _) in zip(names, checks, strict=True))
        errors = {
            name: error for name, (_, error) in zip(names, checks, strict=True) if error is not None
        }
        if errors:
            answer.update(status="unavailable", errors=errors)
            logger.warning("not ready: %s", errors)
        self._answer, self._answered_at = answer, time.monotonic()
        return answer

    async def _check_broker(self) -> tuple[str, str | None]:
        if not all(link.ready for link in self._links):
            return "disconnected", "not connected to the broker"
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._publisher.probe()
        except PublishBlocked as exc:
            return "blocked", str(exc)
        except TimeoutError:
            return "unresponsive", f"the broker did not confirm within {self._timeout_s} s"
        except BrokerUnavailable as exc:
            return "unresponsive", str(exc)
        return "connected", None

    async def _check_store(self) -> tuple[str, str | None]:
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._store.check_write()
        except TimeoutError:
            return "unavailable", f"the store did not commit a write within {self._timeout_s} s"
        except StoreUnavailable as exc:
            return "unavailable", str(exc)
        except Exception as exc:
            # Whatever else breaks a write (a corrupt file, a bug) also means "not ready".
            logger.exception("the store check failed")
            return "unavailable", f"the store check failed: {exc!r}"
        return "ok", None

    async def _check_recording(self) -> tuple[str, str | None]:
        if self._recording is None:
            return "ok", None
        if not all(link.ready for link in self._links):
            return "unknown", None  # the broker check says why
        lag_s = self._recording.lag_s()
        if lag_s > self._max_lag_s:
            return "behind", f"a status event has waited {lag_s:.1f} s to be recorded"
        backlog = self._recording.backlog
        if backlog > self._max_backlog:
            return "behind", f"{backlog} status events wait in the journal shards"
        return "ok", None


class Alive(msgspec.Struct, frozen=True):
    status: Literal["ok"]


class ReadyAnswer(msgspec.Struct, frozen=True):
    """``Readiness.answer``: each part's state, and what failed when not ready."""

    status: Literal["ready", "unavailable"]
    broker: Literal["connected", "disconnected", "blocked", "unresponsive"]
    store: str
    recording: Literal["ok", "behind", "unknown"]
    errors: dict[str, str] = {}


@documented("Liveness", responses={200: Alive}, auth="public")
async def healthz(request: Request) -> JSONResponse:
    """The process is up; nothing else is checked (a restart would not fix the broker)."""
    return JSONResponse({"status": "ok"})


@documented(
    "Readiness: the broker, the store and the recording",
    responses={200: ReadyAnswer, 503: ReadyAnswer},
    auth="public",
)
async def readyz(request: Request) -> JSONResponse:
    """200 if a publish would be confirmed and a write would commit; else 503 saying which not."""
    readiness: Readiness = request.app.state.readiness
    answer = await readiness.answer()
    if answer["status"] == "ready":
        return JSONResponse(answer)
    return JSONResponse(answer, status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)})
