"""Erlang's port mapper daemon (epmd): stop the one our node started, once no node uses it.

The first Erlang node on a host starts epmd, which then runs for good. Our node
notes whether it was that first node (``NodeConfig.epmd_marker``); its stop
then asks epmd to quit, which epmd itself refuses while any node (ours, a test
run beside us, a system RabbitMQ) is still registered. An epmd someone else
started is never touched.

Stdlib only, so it can run before the project's dependencies are installed.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path

from .ports import accepts_connections

logger = logging.getLogger(__name__)


def _epmd() -> str | None:
    found = shutil.which("epmd")
    if found is None and Path("/usr/lib/erlang/bin/epmd").exists():
        found = "/usr/lib/erlang/bin/epmd"
    return found


def is_running(port: int) -> bool:
    return accepts_connections(port)


def stop_if_unused(port: int) -> bool:
    """Ask the epmd on ``port`` to quit; True if it did (it refuses while nodes are registered)."""
    epmd = _epmd()
    if epmd is None or not is_running(port):
        return False
    result = subprocess.run(
        [epmd, "-port", str(port), "-kill"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    answer = (result.stdout + result.stderr).strip()
    stopped = result.returncode == 0 and answer.startswith("Killed")
    logger.info("epmd on port %d: %s", port, answer if not stopped else "stopped")
    return stopped
