"""Imported first by the process pool's forkserver: it must not outlive its worker.

A worker killed with SIGKILL cannot shut its pool down; without this its
forkserver and the pool processes it forked would live on as orphans.
"""

from workers.pool import die_with_parent

die_with_parent()

import workers.images  # noqa: E402, F401 - preloaded so pool processes start with Pillow loaded
