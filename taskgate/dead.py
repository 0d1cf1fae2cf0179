"""``taskgate dead list|show|replay KIND``: dead letters, through ``workers.dead``."""

from __future__ import annotations

import argparse

from workers import dead

from . import exits
from .commands import Subcommands, describe


def add_parser(commands: Subcommands) -> None:
    parser = describe(
        commands,
        "dead",
        "list, show, replay or discard the dead letters of a task kind",
        "The dead letters of a task kind (its queue tasks.KIND.dead) on the broker at\n"
        "$AMQP_URL:\n"
        "  list    one line per message: id, attempt, reason (they stay in the queue)\n"
        "  show    every header and the body of each message (they stay in the queue)\n"
        "  replay  move them back to the kind's queue, as attempt 1 (its limit is\n"
        "          $TASK_QUEUE_MAX_LENGTH, as for the workers)\n"
        "  discard remove the messages whose message_id is ID; the rest stay, in order",
        exits.describe_codes(
            ok="done (also when there are no dead letters)",
            failure="no dead-letter queue for KIND, or the broker cannot be reached",
        ),
    )
    parser.add_argument("action", choices=["list", "show", "replay", "discard"], help="see above")
    parser.add_argument("kind", metavar="KIND", help="task kind, e.g. images.thumbnail")
    parser.add_argument("ids", metavar="ID", nargs="*", help="discard: the messages' ids")
    parser.add_argument(
        "--limit", type=int, default=None, metavar="N", help="at most N messages (default: all)"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    argv = [args.action, args.kind, *args.ids]
    if args.limit is not None:
        argv += ["--limit", str(args.limit)]
    return dead.main(argv)
