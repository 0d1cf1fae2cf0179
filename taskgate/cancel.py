"""``taskgate cancel TASK_ID``: cancel a task (DELETE /tasks/ID)."""

from __future__ import annotations

import argparse

import httpx

from . import exits
from .commands import Subcommands, describe
from .gateway_client import check, gateway_options, open_client, task_path, unreachable


def add_parser(commands: Subcommands) -> None:
    parser = describe(
        commands,
        "cancel",
        "cancel a task",
        "Cancel a task of yours (an admin: anyone's). A queued task ends 'cancelled'\n"
        "at once and never runs; a running one is asked to stop and is stopped for\n"
        "good after the workers' TASK_CANCEL_GRACE_S ('taskgate watch' shows its end).\n"
        "Prints the task's state: cancelled, or 'cancel requested' while it stops.",
        exits.describe_codes(
            ok="cancelled, or the cancel was requested of the running task",
            failure="the task had already ended (HTTP 409), is not yours or does not exist"
            " (404), or the gateway refused or could not be reached",
        ),
        parents=[gateway_options()],
    )
    parser.add_argument("task_id", metavar="TASK_ID", help="as 'taskgate upload' printed it")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    with open_client(args) as client:
        try:
            response = check(client.delete(task_path(args.task_id)))
        except httpx.TransportError as exc:
            raise unreachable(args, exc) from None
    if response.status_code == 202:
        print(f"{args.task_id}  cancel requested (the task is running)")
    else:
        print(f"{args.task_id}  {response.json()['state']}")
    return exits.OK
