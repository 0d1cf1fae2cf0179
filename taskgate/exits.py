"""Exit codes shared by every ``taskgate`` command, and the help text that documents them."""

from __future__ import annotations

OK = 0
# The command ran and the answer is "no": an RPC error, an HTTP error, a task that failed.
FAILURE = 1
# The command line (or the environment it needs) is wrong; argparse uses 2 as well.
USAGE = 2
# ``broker status`` only: the node is not running (the code ``rpc.node`` uses).
STOPPED = 3
# The shell's convention for "stopped by Ctrl-C" (128 + SIGINT).
INTERRUPTED = 130

EPILOG = """\
exit codes:
  0    success (for upload --watch and watch: the task succeeded)
  1    failure: an RPC error, timeout or missing server; an HTTP error from the
       gateway; a task that failed or went dead; a broker that cannot be reached
  2    bad usage: unknown options, JSON that does not parse, SECRET_KEY unset
  3    broker status: the node is not running
  130  interrupted (Ctrl-C)
"""
