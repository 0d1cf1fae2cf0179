"""``taskgate tasks``: list tasks, newest first (GET /tasks), page after page."""

from __future__ import annotations

import argparse
import time

import httpx

from . import exits
from .commands import Subcommands, describe
from .gateway_client import check, gateway_options, open_client, unreachable
from .output import print_json
from .table import format_table

HEADERS = ("TASK", "KIND", "STATE", "PERCENT", "CREATED")


def add_parser(commands: Subcommands) -> None:
    parser = describe(
        commands,
        "tasks",
        "list tasks",
        "List your tasks (an admin: everyone's), newest first: one line each, or\n"
        "JSON with --json. Follows the gateway's pages up to --limit tasks.",
        exits.describe_codes(
            ok="listed (perhaps none)",
            failure="the gateway refused (e.g. 400 for a bad filter) or could not be reached",
        ),
        parents=[gateway_options()],
    )
    parser.add_argument("--state", help="only tasks in this state (e.g. running, cancelled)")
    parser.add_argument("--kind", help="only tasks of this kind")
    parser.add_argument(
        "--since", help="only tasks created since (Unix seconds or ISO 8601, UTC by default)"
    )
    parser.add_argument(
        "--limit", type=int, default=50, metavar="N", help="at most N tasks (default: 50)"
    )
    parser.add_argument("--json", action="store_true", help="print the tasks as JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    filters = {k: v for k in ("state", "kind", "since") if (v := getattr(args, k)) is not None}
    tasks: list[dict] = []
    cursor = None
    with open_client(args) as client:
        try:
            while len(tasks) < args.limit:
                page_size = min(500, args.limit - len(tasks))
                params = {
                    **filters,
                    "limit": str(page_size),
                    **({"cursor": cursor} if cursor else {}),
                }
                page = check(client.get("/tasks", params=params)).json()
                tasks.extend(page["tasks"])
                cursor = page["next_cursor"]
                if cursor is None:
                    break
        except httpx.TransportError as exc:
            raise unreachable(args, exc) from None
    if args.json:
        print_json(tasks)
    elif tasks:
        rows = [_row(task) for task in tasks]
        print(format_table(HEADERS, rows, numeric=(False, False, False, True, False)))
    return exits.OK


def _row(task: dict) -> list[str]:
    percent = task.get("percent")
    created = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(task["created_at"]))
    return [
        task["task_id"],
        task["kind"],
        task["state"],
        "" if percent is None else f"{percent:.0f}%",
        created,
    ]
