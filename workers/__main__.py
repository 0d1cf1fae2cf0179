"""Run workers as a process: ``python -m workers [--tasks module:attribute ...] [--orders]``.

Without ``--tasks`` it runs the built-in tasks and the order.created consumers.

Waits for the broker if it is not up yet. Serves until SIGTERM or SIGINT, then
stops consuming, lets the tasks in flight finish within SHUTDOWN_GRACE_S (the
rest go back to the queue) and exits 0.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import logging
import sys

from infra.database import Database, open_database, redact
from infra.logs import configure_logging
from infra.metrics import serve_metrics
from infra.presence import Heartbeat
from infra.process import exit_requested, run
from rpc.connection import connect_until_up, connect_wire, tls_options
from rpc.wire import WireConnection

from .claims import new_holder
from .events import EventConsumers
from .registry import TaskRegistry
from .runtime import Worker
from .settings import WorkerSettings
from .shop.consumers import OrderFulfilment
from .shop.db import ShopDb
from .shop.mailer import LogMailer, Mailer

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


async def serve(registry: TaskRegistry, settings: WorkerSettings, *, orders: bool) -> None:
    """Run the tasks (and the order consumers) until SIGTERM or SIGINT."""
    stop = exit_requested()
    connection = await connect_until_up(
        functools.partial(connect_wire, tls=tls_options(settings)),
        settings.amqp_url,
        name="worker",
        reconnect_interval_s=settings.reconnect_interval_s,
        reconnect_max_s=settings.reconnect_max_s,
        stop=stop,
    )
    if connection is None:
        return
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(connection.close)
        database = await open_database(settings.database)
        stack.push_async_callback(database.close)
        logger.info("store: %s", redact(settings.database))
        worker = Worker(registry, settings, database=database)
        await worker.start(connection)
        stack.push_async_callback(worker.stop)
        # Named as in its claims and its status events: the admin page's timeline names it so.
        heartbeat = Heartbeat(
            database,
            "worker",
            functools.partial(report, worker),
            interval_s=settings.presence_interval_s,
            name=worker.holder,
        )
        await heartbeat.start()
        stack.push_async_callback(heartbeat.close)
        if orders:
            consumers = await start_order_consumers(connection, settings, database, stack)
            stack.push_async_callback(consumers.stop, settings.shutdown_grace_s)
        logger.info("ready")
        await stop.wait()
        logger.info("stopping: finishing work in flight (up to %s s)", settings.shutdown_grace_s)


def report(worker: Worker) -> dict[str, object]:
    """What the worker's heartbeat says: the kinds it runs and the tasks running now."""
    running = worker.cancels.running() if worker.cancels is not None else []
    return {"kinds": sorted(worker.registry.kinds), "running": running}


async def start_order_consumers(
    connection: WireConnection,
    settings: WorkerSettings,
    database: Database,
    stack: contextlib.AsyncExitStack,
) -> EventConsumers:
    """The order.created consumers (email, inventory, analytics) on the shop's tables."""
    # A part's claim is not renewed: its lease covers an email's every attempt, three times.
    email_s = settings.email_timeout_s * settings.email_attempts
    db = await ShopDb.open(
        database, holder=new_holder("orders"), lease_s=max(settings.task_lease_s, 3 * email_s)
    )
    mailer: Mailer | LogMailer
    if settings.email_api_url:
        mailer = Mailer(
            base_url=settings.email_api_url,
            api_key=settings.email_api_key,
            timeout_s=settings.email_timeout_s,
            attempts=settings.email_attempts,
        )
    else:
        logger.warning("EMAIL_API_URL is not set: order confirmations are only logged")
        mailer = LogMailer()
    stack.push_async_callback(mailer.close)
    consumers = EventConsumers(
        OrderFulfilment(db, mailer).subscribers(),
        prefetch=settings.prefetch,
        status_shards=settings.status_shards,
    )
    await consumers.start(connection)
    return consumers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers", description=__doc__)
    parser.add_argument(
        "--tasks",
        action="append",
        metavar="MODULE:ATTRIBUTE",
        help=f"task registry to run (repeatable; default {DEFAULT_TASKS})",
    )
    parser.add_argument(
        "--orders",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run the order.created consumers (default: only when --tasks is not given)",
    )
    args = parser.parse_args(argv)
    settings = WorkerSettings.from_env()
    configure_logging(settings.log_format)
    serve_metrics(settings.metrics_port, settings.metrics_host)
    registry = TaskRegistry()
    for spec in args.tasks or [DEFAULT_TASKS]:
        registry.include(load_registry(spec))
    orders = args.tasks is None if args.orders is None else args.orders
    run(serve(registry, settings, orders=orders))
    return 0


if __name__ == "__main__":
    sys.exit(main())
