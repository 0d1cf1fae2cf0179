"""``taskgate broker start|stop|status|restart``: the private RabbitMQ node, through
``infra.node`` (the same node ``scripts/broker`` manages)."""

from __future__ import annotations

import argparse

from infra import node

from . import exits
from .commands import Subcommands, describe


def add_parser(commands: Subcommands) -> None:
    parser = describe(
        commands,
        "broker",
        "start, stop or check the private RabbitMQ node",
        "Manage the private development RabbitMQ node under $TASKGATE_VAR/broker\n"
        "(the one scripts/broker manages). Config: TASKGATE_VAR (./var),\n"
        "TASKGATE_AMQP_PORT (5672), TASKGATE_DIST_PORT (25672),\n"
        "TASKGATE_MANAGEMENT_PORT (15672; empty disables the management plugin).",
        exits.describe_codes(
            ok="done; status: the node runs",
            failure="the node did not start or stop (its log's tail is shown)",
            extra=[(exits.STOPPED, "status: the node is not running")],
        ),
    )
    parser.add_argument(
        "action",
        choices=["start", "stop", "status", "restart"],
        help="restart keeps the data (queues, users, messages)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=90,
        metavar="SECONDS",
        help="how long start and stop may take (default: 90)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    return node.main([args.action, "--timeout-s", str(args.timeout)])
