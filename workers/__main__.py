"""Run workers as a process: ``python -m workers [--tasks module:attribute ...]``.

Waits for the broker if it is not up yet. Serves until SIGTERM or SIGINT, then
stops consuming, lets the tasks in flight finish within SHUTDOWN_GRACE_S (the
rest go back to the queue) and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import signal
import sys

from rpc.connection import connect_until_up
from rpc.runner import run

from .registry import TaskRegistry
from .runtime import Worker
from .settings import WorkerSettings

logger = logging.getLogger("workers")

DEFAULT_TASKS = "workers.builtin:registry"


def load_registry(spec: str) -> TaskRegistry:
    """Import ``module:attribute`` (a TaskRegistry, or a callable returning one)."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"expected 'module:attribute', got {spec!r}")
    value = getattr(importlib.import_module(module_name), attribute)
    if not isinstance(value, TaskRegistry) and callable(value):
        value = value()
    if not isinstance(value, TaskRegistry):
        raise TypeError(f"{spec} is a {type(value).__name__}, not a TaskRegistry")
    return value


async def serve(registry: TaskRegistry, settings: WorkerSettings) -> None:
    """Run the worker until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    connection = await connect_until_up(
        settings.amqp_url,
        name="worker",
        reconnect_interval_s=settings.reconnect_interval_s,
        stop=stop,
    )
    if connection is None:
        return
    worker = Worker(registry, settings)
    try:
        await worker.start(connection)
        logger.info("ready")
        await stop.wait()
        logger.info("stopping: finishing tasks in flight (up to %s s)", settings.shutdown_grace_s)
        await worker.stop()
    finally:
        await connection.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers", description=__doc__)
    parser.add_argument(
        "--tasks",
        action="append",
        metavar="MODULE:ATTRIBUTE",
        help=f"task registry to run (repeatable; default {DEFAULT_TASKS})",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = WorkerSettings.from_env()
    registry = TaskRegistry()
    for spec in args.tasks or [DEFAULT_TASKS]:
        registry.include(load_registry(spec))
    run(serve(registry, settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
