"""``taskgate broker start|stop|status|restart|url|rotate-users``: the private RabbitMQ node,
through ``infra.node_cli``, and its per-process users, through ``workers.access`` (the same
node and users ``scripts/broker`` manages)."""

from __future__ import annotations

import argparse

from infra import node_cli
from workers import access

from . import exits
from .commands import Subcommands, describe


def add_parser(commands: Subcommands) -> None:
    parser = describe(
        commands,
        "broker",
        "start, stop or check the private RabbitMQ node; rotate its users' passwords",
        "Manage the private development RabbitMQ node under $TASKGATE_VAR/broker\n"
        "(the one scripts/broker manages). start and restart also create the broker\n"
        "users of the web, worker and rpc processes that are missing, and write their\n"
        "AMQP URLs to $TASKGATE_VAR/broker/users.env; users whose password there still\n"
        "logs in are kept. rotate-users gives them new passwords and lists the\n"
        "processes to restart. The node has no guest user: its administrator (admin,\n"
        "also the management UI's login) gets a generated password at the first\n"
        "start, kept in $TASKGATE_VAR/broker/admin.password; url prints its AMQP URL:\n"
        '  export AMQP_URL="$(taskgate broker url)"\n'
        "Config: TASKGATE_VAR (./var), TASKGATE_AMQP_PORT (5672), TASKGATE_DIST_PORT\n"
        "(25672), TASKGATE_MANAGEMENT_PORT (15672; empty disables the management plugin),\n"
        "TASKGATE_BROKER_ADDRESS (127.0.0.1: the address AMQP and management listen on).",
        exits.describe_codes(
            ok="done; status: the node runs",
            failure="the node did not start or stop (its log's tail is shown), or its\n"
            "users could not be made or rotated",
            extra=[(exits.STOPPED, "status: the node is not running")],
        ),
    )
    parser.add_argument(
        "action",
        choices=["start", "stop", "status", "restart", "url", "rotate-users"],
        help="restart keeps the data (queues, users, messages)",
    )
    parser.add_argument(
        "--role",
        action="append",
        choices=[role.name for role in access.ROLES],
        help="rotate-users: only this user (repeatable; default: all)",
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
    if args.action == "rotate-users":
        return access.main(["rotate", *(f"--role={role}" for role in args.role or ())])
    code = node_cli.main([args.action, "--timeout-s", str(args.timeout)])
    if code != exits.OK or args.action not in ("start", "restart"):
        return code
    return access.main(["setup"])
