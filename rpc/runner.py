"""Run an RpcServer as a process: ``python -m rpc module:attribute``.

The process serves until SIGTERM or SIGINT, then stops consuming, finishes the
calls in flight and exits 0.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import logging
import sys

from infra.database import open_database
from infra.logs import configure_logging
from infra.metrics import serve_metrics
from infra.presence import Heartbeat
from infra.process import exit_requested, run

from .connection import connect_until_up, connect_wire, tls_options
from .server import RpcServer
from .settings import RpcSettings

logger = logging.getLogger(__name__)


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
    stop = exit_requested()
    connection = await connect_until_up(
        functools.partial(connect_wire, tls=tls_options(settings)),
        settings.amqp_url,
        name=f"rpc:{server.name}",
        reconnect_interval_s=settings.reconnect_interval_s,
        reconnect_max_s=settings.reconnect_max_s,
        stop=stop,
    )
    if connection is None:
        return
    # The store only for the presence heartbeat; the shared settings already name it, and
    # the services it serves (workers/services.py) use the same one.
    database = await open_database(settings.database)
    heartbeat = Heartbeat(
        database,
        "rpc",
        lambda: {"server": server.name, "methods": server.methods, "calls": server.stats.window()},
        interval_s=settings.presence_interval_s,
    )
    try:
        await server.start(
            connection,
            prefetch=settings.prefetch,
            concurrency=settings.concurrency,
            queue_type=settings.queue_type,
        )
        await heartbeat.start()
        logger.info("ready")
        await stop.wait()
        logger.info("stopping: finishing calls in flight")
        await server.stop(settings.shutdown_grace_s)
    finally:
        await heartbeat.close()
        await connection.close()
        await database.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rpc", description=__doc__)
    parser.add_argument("server", help="the RpcServer to run, as module:attribute")
    args = parser.parse_args(argv)
    settings = RpcSettings.from_env()
    configure_logging(settings.log_format)
    serve_metrics(settings.metrics_port, settings.metrics_host)
    run(serve(load_server(args.server), settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
