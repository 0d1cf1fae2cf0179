"""``taskgate queues``: every queue of the broker (the vhost of $AMQP_URL) with its backlog,
consumers and message rates, then the autoscaling signal of each registered task kind.

The figures come from the management HTTP API when the node has the plugin, as
the broker script's node does unless TASKGATE_MANAGEMENT_PORT is empty. Without
it they come from ``rabbitmqctl list_queues``, run against the private node with
the environment ``infra.node`` gives it; rabbitmqctl knows no rates, shown as "-".
The signal per kind is what the web process puts on /metrics
(``gateway/autoscale.py``), from the store and those queue figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from gateway.autoscale import Bounds, KindLoad, QueueCount, combined, measure
from infra import node
from infra.database import DatabaseError, open_database
from workers import kinds
from workers.topology import PRIORITIES, task_queue

from . import exits, settings
from .amqp_address import AmqpAddress
from .commands import Subcommands, describe
from .errors import CommandError, usage_error
from .table import format_table

# The management API returns only these fields (dotted names reach into nested objects).
MANAGEMENT_COLUMNS = (
    "name",
    "messages_ready",
    "messages_unacknowledged",
    "consumers",
    "message_stats.publish_details.rate",
    "message_stats.deliver_get_details.rate",
)
RABBITMQCTL_COLUMNS = ("name", "messages_ready", "messages_unacknowledged", "consumers")
HEADERS = ("name", "ready", "unacked", "consumers", "publish/s", "deliver/s")
NUMERIC = (False, True, True, True, True, True)
MISSING = "-"
KIND_HEADERS = (
    "kind",
    "ready",
    "leased",
    "oldest s",
    "arrivals/s",
    "done/s",
    "mean s",
    "consumers",
    "desired workers",
)
KIND_NUMERIC = (False, *([True] * (len(KIND_HEADERS) - 1)))


@dataclass(frozen=True, slots=True)
class QueueStats:
    """One queue; None where the source has no figure."""

    name: str
    ready: int | None
    unacked: int | None
    consumers: int | None
    publish_rate: float | None = None
    deliver_rate: float | None = None

    def cells(self) -> tuple[str, ...]:
        counts = (self.ready, self.unacked, self.consumers)
        rates = (self.publish_rate, self.deliver_rate)
        return (
            self.name,
            *(MISSING if n is None else str(n) for n in counts),
            *(MISSING if r is None else f"{r:.1f}" for r in rates),
        )


def add_parser(commands: Subcommands) -> None:
    parser = describe(
        commands,
        "queues",
        "list the broker's queues with backlog, consumers and rates",
        "Every queue of the broker's vhost (the one in $AMQP_URL). The figures come from\n"
        "the management HTTP API when the node has the plugin (TASKGATE_MANAGEMENT_PORT,\n"
        "default 15672, or --management-url); with TASKGATE_MANAGEMENT_PORT empty they\n"
        "come from rabbitmqctl on the private node (see: taskgate broker --help).",
        "columns: ready and unacked messages, consumers, and publish and deliver\n"
        "(incl. basic.get) rates per second; '-' where the source has no figure.\n"
        "Then, per task kind a worker registered in the store (DATABASE_URL or\n"
        "DATABASE_PATH), the autoscaling signal the web process puts on /metrics:\n"
        "ready messages, leased tasks (delivered, unsettled), the age of the oldest\n"
        "waiting task, arrivals and completions per second and the mean task time\n"
        "over AUTOSCALE_WINDOW_S, consumers, and desired workers (Little's law,\n"
        "see docs/design.md). Without a store (no DATABASE_URL, no DATABASE_PATH\n"
        "file), only the queues.\n\n"
        + exits.describe_codes(
            ok="the table was printed",
            failure="neither the management API nor rabbitmqctl answered",
            usage="bad arguments, or an AMQP_URL or TASKGATE_*_PORT that does not parse",
        ),
    )
    parser.add_argument(
        "--management-url",
        metavar="URL",
        help="the management API, e.g. http://127.0.0.1:15672 (default: the host of "
        "$AMQP_URL on $TASKGATE_MANAGEMENT_PORT; credentials from $AMQP_URL)",
    )
    parser.set_defaults(run=run)


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) else None


def _rate(stats: Mapping[str, Any], details: str) -> float:
    # A queue nothing has gone through yet has no message_stats at all: its rates are 0.
    rate = stats.get(details, {}).get("rate", 0.0)
    return float(rate) if isinstance(rate, int | float) else 0.0


def from_management(base_url: str, address: AmqpAddress) -> list[QueueStats]:
    """The vhost's queues from ``GET /api/queues/<vhost>``."""
    url = f"{base_url.rstrip('/')}/api/queues/{quote(address.vhost, safe='')}"
    try:
        response = httpx.get(
            url,
            params={"columns": ",".join(MANAGEMENT_COLUMNS)},
            auth=(address.user, address.password),
            timeout=10,
        )
    except httpx.TransportError as exc:
        raise CommandError(
            f"cannot reach the management API at {base_url} ({exc}); if the node has no "
            "management plugin, set TASKGATE_MANAGEMENT_PORT= (empty) to ask rabbitmqctl"
        ) from None
    if response.status_code != 200:
        raise CommandError(f"the management API answered HTTP {response.status_code} for {url}")
    return [
        QueueStats(
            name=queue["name"],
            ready=_count(queue.get("messages_ready")),
            unacked=_count(queue.get("messages_unacknowledged")),
            consumers=_count(queue.get("consumers")),
            publish_rate=_rate(queue.get("message_stats", {}), "publish_details"),
            deliver_rate=_rate(queue.get("message_stats", {}), "deliver_get_details"),
        )
        for queue in response.json()
    ]


def from_rabbitmqctl(broker: node.BrokerNode, vhost: str) -> list[QueueStats]:
    """The vhost's queues from ``rabbitmqctl list_queues`` (no rates)."""
    try:
        output = broker.rabbitmqctl(
            "list_queues", "--quiet", "--formatter", "json", "--vhost", vhost,
            *RABBITMQCTL_COLUMNS,
        )  # fmt: skip
    except (RuntimeError, subprocess.TimeoutExpired, OSError) as exc:
        raise CommandError(f"rabbitmqctl could not list the queues: {exc}") from None
    return [
        QueueStats(
            name=queue["name"],
            ready=_count(queue.get("messages_ready")),
            unacked=_count(queue.get("messages_unacknowledged")),
            consumers=_count(queue.get("consumers")),
        )
        for queue in json.loads(output or "[]")
    ]


def private_node_config() -> node.NodeConfig:
    """The node the broker script manages, read from TASKGATE_* as ``infra.node`` reads it."""
    try:
        return node.config_from_env()
    except ValueError as exc:  # a port that is not a number; the message names it
        raise usage_error(str(exc)) from None


def private_node(config: node.NodeConfig, address: AmqpAddress) -> node.BrokerNode:
    """The private node, if it is the broker $AMQP_URL names."""
    if config.amqp_port != address.port:
        raise CommandError(
            f"$AMQP_URL names port {address.port}, but the private node listens on "
            f"{config.amqp_port} (TASKGATE_AMQP_PORT); rabbitmqctl would describe another "
            "broker. Pass --management-url for this one."
        )
    return node.BrokerNode(config)


def collect(args: argparse.Namespace, address: AmqpAddress) -> list[QueueStats]:
    if args.management_url:
        return from_management(args.management_url, address)
    config = private_node_config()
    if config.management_port is not None:
        return from_management(f"http://{address.url_host}:{config.management_port}", address)
    return from_rabbitmqctl(private_node(config, address), address.vhost)


def run(args: argparse.Namespace) -> int:
    try:
        address = AmqpAddress.parse(settings.load().amqp_url)
    except ValueError as exc:
        raise usage_error(f"AMQP_URL: {exc}") from None
    queues = sorted(collect(args, address), key=lambda queue: queue.name)
    if queues:
        print(format_table(HEADERS, [queue.cells() for queue in queues], numeric=NUMERIC))
    else:
        print(f"no queues in vhost {address.vhost!r}")
    cli = settings.load()
    if cli.database_url is None and not cli.database_path.exists():
        return exits.OK  # no store here: no kinds to report on (and none is created)
    counts = {
        queue.name: QueueCount(queue.ready, queue.consumers or 0)
        for queue in queues
        if queue.ready is not None
    }
    try:
        loads = asyncio.run(kind_loads(cli, counts))
    except (DatabaseError, OSError) as exc:
        print(f"\nno autoscaling signal: the store ({cli.database}) could not be read: {exc}")
        return exits.OK
    if loads:
        print()
        print(
            format_table(KIND_HEADERS, [kind_cells(load) for load in loads], numeric=KIND_NUMERIC)
        )
    return exits.OK


async def kind_loads(cli: settings.CliSettings, counts: dict[str, QueueCount]) -> list[KindLoad]:
    """The signal of every registered kind, with the broker's figures of its queue."""
    database = await open_database(cli.database)
    try:
        registered = await database.read(kinds.registered)
        bounds = Bounds(
            window_s=cli.autoscale_window_s,
            drain_s=cli.autoscale_drain_s,
            min_workers=cli.autoscale_min_workers,
            max_workers=cli.autoscale_max_workers,
        )
        by_kind = {
            kind: combined(counts.get(task_queue(kind, level)) for level in PRIORITIES)
            for kind in registered
        }
        return await measure(database, by_kind, bounds)
    finally:
        await database.close()


def kind_cells(load: KindLoad) -> tuple[str, ...]:
    def optional(value: int | None) -> str:
        return MISSING if value is None else str(value)

    return (
        load.kind,
        optional(load.ready),
        str(load.unacked),
        f"{load.oldest_ready_age_s:.1f}",
        f"{load.arrivals_per_s:.2f}",
        f"{load.completions_per_s:.2f}",
        MISSING if load.mean_task_s is None else f"{load.mean_task_s:.2f}",
        optional(load.consumers),
        str(load.desired_workers),
    )
