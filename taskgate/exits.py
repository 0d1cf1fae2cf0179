"""Exit codes shared by every ``taskgate`` command, and the help text that documents them."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

OK = 0
# The command ran and the answer is "no": an RPC error, an HTTP error, a task that failed.
FAILURE = 1
# The command line (or the environment it needs) is wrong; argparse uses 2 as well.
USAGE = 2
# ``broker status`` only: the node is not running (the code ``infra.node_cli`` uses).
STOPPED = 3
# The shell's convention for "stopped by Ctrl-C" (128 + SIGINT).
INTERRUPTED = 130

# Where hand-written help text wraps (argparse wraps its own to the terminal).
HELP_WIDTH = 79

SUMMARY = """\
exit codes:
  0    success (upload --watch and watch: the task succeeded)
  1    failure: an RPC error, timeout or missing server; an HTTP error from the
       gateway; a task that failed, went dead or was cancelled; a broker that
       cannot be reached
  2    bad usage: unknown options, JSON that does not parse, SECRET_KEY unset
  3    broker status: the node is not running
  130  interrupted (Ctrl-C)
"""


def describe_codes(
    *,
    ok: str,
    failure: str | None,
    usage: str = "bad arguments",
    extra: Sequence[tuple[int, str]] = (),
) -> str:
    """One command's exit codes, for the end of its ``--help`` (``failure=None``: it has none)."""
    codes = [(OK, ok), (FAILURE, failure), (USAGE, usage), *extra, (INTERRUPTED, "interrupted")]
    return "exit codes:\n" + "".join(
        textwrap.fill(
            f"{code:<4} {meaning}", HELP_WIDTH, initial_indent="  ", subsequent_indent=" " * 7
        )
        + "\n"
        for code, meaning in codes
        if meaning is not None
    )
