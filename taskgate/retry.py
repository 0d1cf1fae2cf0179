"""``taskgate retry TASK_ID``: run a failed, dead or cancelled task again (POST /tasks/ID/retry)."""

from __future__ import annotations

import argparse

import httpx

from . import exits
from .commands import Subcommands, describe
from .gateway_client import check, gateway_options, open_client, task_path, unreachable


def add_parser(commands: Subcommands) -> None:
    parser = describe(
        commands,
        "retry",
        "run a failed, dead or cancelled task again",
        "Run a task of yours (an admin: anyone's) that ended failed, dead or cancelled\n"
        "again, as a new task with the same input; the original keeps its outcome.\n"
        "Prints the new task's id ('taskgate watch' follows it). A task is retried\n"
        "once: asked again, it prints the same new task.",
        exits.describe_codes(
            ok="the retry was accepted",
            failure="the task has not ended, or succeeded (HTTP 409), is not yours or does"
            " not exist (404), or the gateway refused or could not be reached",
        ),
        parents=[gateway_options()],
    )
    parser.add_argument("task_id", metavar="TASK_ID", help="as 'taskgate upload' printed it")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    with open_client(args) as client:
        try:
            response = check(client.post(task_path(args.task_id, "/retry"), json={}))
        except httpx.TransportError as exc:
            raise unreachable(args, exc) from None
    print(response.json()["task_id"])
    return exits.OK
