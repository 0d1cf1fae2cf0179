"""The process pool for CPU-bound task work (Pillow), and how its processes start."""

from __future__ import annotations

import ctypes
import ctypes.util
import multiprocessing
import signal
from concurrent.futures import ProcessPoolExecutor

# prctl(2) option: the signal this process gets when its parent dies.
_PR_SET_PDEATHSIG = 1
# mallopt(3) parameters.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_KEEP_BYTES = 256 * 1024 * 1024


def make_pool(
    processes: int, preload: tuple[str, ...] = ("workers.forkserver_preload",)
) -> ProcessPoolExecutor:
    """A pool of ``processes`` started through a forkserver that has imported ``preload``.

    forkserver: children do not inherit the event loop, sockets and threads of the worker.
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(preload))
    return ProcessPoolExecutor(max_workers=processes, mp_context=context, initializer=_init_process)


def _init_process() -> None:
    # Ctrl-C reaches the whole process group; the parent decides when the pool stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent()
    _keep_freed_memory()


def die_with_parent() -> None:
    """Have the kernel kill this process when its parent dies (Linux), even by SIGKILL."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass  # not Linux: a parent killed hard may leave its pool behind


def _keep_freed_memory() -> None:
    """Stop glibc from returning big image buffers to the OS after every task.

    A fresh process mmaps each multi-megabyte buffer and unmaps it on free, so
    every image pays its page faults again: about 10% of thumbnail throughput.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, _KEEP_BYTES)
        libc.mallopt(_M_TRIM_THRESHOLD, _KEEP_BYTES)
    except (OSError, AttributeError):
        pass  # not glibc: keep the defaults
