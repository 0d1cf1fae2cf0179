"""Run an RpcServer as a process: ``python -m rpc module:attribute``.

The process serves until SIGTERM or SIGINT, then stops consuming, finishes the
calls in flight and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import logging
import signal
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

from aio_pika.abc import AbstractRobustConnection

from .connection import connect
from .errors import BrokerUnavailable
from .server import RpcServer
from .settings import RpcSettings

logger = logging.getLogger(__name__)

T = TypeVar("T")


def load_server(spec: str) -> RpcServer:
    """Import ``module:attribute`` (the uvicorn convention) and check it is an RpcServer."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"expected 'module:attribute', got {spec!r}")
    server = getattr(importlib.import_module(module_name), attribute)
    if not isinstance(server, RpcServer):
        raise TypeError(f"{spec} is a {type(server).__name__}, not an RpcServer")
    return server


async def serve(server: RpcServer, settings: RpcSettings) -> None:
    """Serve until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    connection = await connect_until_up(settings, f"rpc:{server.name}", stop)
    if connection is None:
        return
    try:
        await server.start(connection, prefetch=settings.prefetch, concurrency=settings.concurrency)
        logger.info("ready")
        await stop.wait()
        logger.info("stopping: finishing calls in flight")
        await server.stop(settings.shutdown_grace_s)
    finally:
        await connection.close()


async def connect_until_up(
    settings: RpcSettings, name: str, stop: asyncio.Event
) -> AbstractRobustConnection | None:
    """Connect, retrying while the broker is down; None if asked to stop first."""
    while not stop.is_set():
        try:
            return await connect(
                settings.amqp_url, name=name, reconnect_interval_s=settings.reconnect_interval_s
            )
        except BrokerUnavailable as exc:
            logger.warning("%s; retrying in %s s", exc, settings.reconnect_interval_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), settings.reconnect_interval_s)
    return None


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run a process's main coroutine on uvloop where it is installed."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rpc", description=__doc__)
    parser.add_argument("server", help="the RpcServer to run, as module:attribute")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = RpcSettings.from_env()
    run(serve(load_server(args.server), settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
