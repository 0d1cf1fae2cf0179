"""``taskgate``: the command line of taskgate (``taskgate --help``).

Each command lives in its own module, which registers its arguments with
``add_parser`` and does its work in ``run``; this module parses the command line,
runs the command and turns its errors into messages on stderr and exit codes.
Results go to stdout, everything else (errors, notices, progress) to stderr.
"""

from __future__ import annotations

import argparse
import sys

from . import (
    broker,
    call,
    cancel,
    dead,
    dev_token,
    exits,
    migrate,
    queues,
    retry,
    tasks,
    upload,
    watch,
)
from .errors import CommandError

COMMANDS = (call, upload, watch, tasks, cancel, retry, dead, queues, migrate, dev_token, broker)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="taskgate",
        description="Talk to a taskgate deployment from the shell: RPC calls, uploads and\n"
        "their tasks, dead letters, queues, development tokens, the private broker.",
        epilog="environment:\n"
        "  AMQP_URL        the broker (call, dead, queues, migrate-queues)\n"
        "  TASKGATE_URL    the gateway (upload, watch, tasks, cancel, retry; default\n"
        "                  http://127.0.0.1:8000)\n"
        "  TASKGATE_TOKEN  Bearer token for the gateway (upload, watch, tasks, cancel, retry)\n"
        "  SECRET_KEY      the gateway's signing key (token)\n\n"
        "'taskgate COMMAND --help' tells more about each command.\n\n" + exits.SUMMARY,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except CommandError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return exits.INTERRUPTED
    return code


if __name__ == "__main__":
    sys.exit(main())
