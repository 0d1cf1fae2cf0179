"""Task handlers registered by kind."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import msgspec

from .topology import HIGH_SUFFIX

Handler = Callable[..., Awaitable[Any]]
H = TypeVar("H", bound=Handler)


@dataclass(frozen=True, slots=True)
class Task:
    kind: str
    handler: Handler
    decoder: msgspec.json.Decoder[Any]
    # None: WorkerSettings.max_attempts.
    max_attempts: int | None = None


class TaskRegistry:
    """Maps task kinds to async handlers ``(ctx, payload) -> result``."""

    def __init__(self) -> None:
        self._tasks: dict[str, Task] = {}

    def task(self, kind: str, *, max_attempts: int | None = None) -> Callable[[H], H]:
        """Register a handler for ``kind``.

        The payload is validated against the annotation of the handler's second
        parameter (a msgspec Struct, dict, ...); the result must be JSON-encodable.
        """

        def register(handler: H) -> H:
            if kind.endswith(HIGH_SUFFIX):
                # tasks.<kind>.high is the high-priority queue of <kind> (workers/topology.py).
                raise ValueError(f"task kind {kind!r} may not end with {HIGH_SUFFIX!r}")
            if not inspect.iscoroutinefunction(cast(Any, handler)):
                raise TypeError(f"task handler for {kind!r} must be an async function")
            if kind in self._tasks:
                raise ValueError(f"task kind {kind!r} is registered twice")
            self._tasks[kind] = Task(kind, handler, _payload_decoder(handler), max_attempts)
            return handler

        return register

    def include(self, other: TaskRegistry) -> None:
        """Add every task of ``other``."""
        for task in other:
            if task.kind in self._tasks:
                raise ValueError(f"task kind {task.kind!r} is registered twice")
            self._tasks[task.kind] = task

    @property
    def kinds(self) -> list[str]:
        return sorted(self._tasks)

    def get(self, kind: str) -> Task:
        return self._tasks[kind]

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(list(self._tasks.values()))

    def __len__(self) -> int:
        return len(self._tasks)


def _payload_decoder(handler: Handler) -> msgspec.json.Decoder[Any]:
    parameters = list(inspect.signature(handler).parameters.values())
    if len(parameters) != 2:
        raise TypeError(f"task handler {handler.__qualname__} must take (ctx, payload)")
    annotation = parameters[1].annotation
    if annotation is inspect.Parameter.empty:
        annotation = Any
    elif isinstance(annotation, str):
        # Only the payload's annotation is resolved: the ctx one may be a
        # TYPE_CHECKING-only import in the handler's module.
        annotation = eval(annotation, handler.__globals__)
    return msgspec.json.Decoder(annotation)
