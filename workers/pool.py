"""The process pool for CPU-bound task work (Pillow): how its processes start, and how
a job running in it reports progress to its task."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import itertools
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.queues import SimpleQueue
from typing import TYPE_CHECKING, Any, TypeVar

from .errors import TaskCancelled

if TYPE_CHECKING:  # pool processes need not import the store
    from .cancellation import Cancellation

logger = logging.getLogger(__name__)

T = TypeVar("T")
# Called on the event loop with (percent, message) for each report of one job.
ProgressListener = Callable[[float, str], None]

# prctl(2) option: the signal this process gets when its parent dies.
_PR_SET_PDEATHSIG = 1
# mallopt(3) parameters.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_KEEP_BYTES = 256 * 1024 * 1024
# Slots of the shared job table (job id modulo this): far more than jobs run or wait at once.
_JOB_SLOTS = 4096


class _JobTable:
    """Memory the pool's processes share, per job slot: the parent marks a job cancelled
    there, and a pool process says which job it runs and its pid (one store each, no pipe)."""

    def __init__(self, context: Any) -> None:
        # ``job id + 1`` of the cancelled job; 0: none.
        self.cancelled = context.RawArray("q", _JOB_SLOTS)
        # Per slot: ``job id + 1`` of the job running, and the pid running it.
        self.running = context.RawArray("q", 2 * _JOB_SLOTS)

    def is_cancelled(self, job_id: int) -> bool:
        return bool(self.cancelled[job_id % _JOB_SLOTS] == job_id + 1)

    def pid_of(self, job_id: int) -> int | None:
        slot = 2 * (job_id % _JOB_SLOTS)
        return int(self.running[slot + 1]) if self.running[slot] == job_id + 1 else None


class TaskPool:
    """``processes`` pool processes whose jobs can report progress to the loop.

    Processes start through a forkserver that has imported ``preload``: they do
    not inherit the worker's event loop, sockets and threads, and none of them
    outlives the worker, however it ends. A job's
    :func:`report_progress` calls travel over one pipe shared by the pool, which
    the event loop reads directly (no thread in between). A pool process that
    dies (a crash in a C library, the OOM killer) breaks the executor: the jobs
    it had fail with BrokenProcessPool, and the next job starts a new pool.
    """

    def __init__(
        self, processes: int, preload: tuple[str, ...] = ("workers.forkserver_preload",)
    ) -> None:
        self._processes = processes
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload(list(preload))
        self._listeners: dict[int, ProgressListener] = {}
        self._job_ids = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._jobs = _JobTable(self._context)
        self._reports, self._executor = self._start()

    def _start(self) -> tuple[SimpleQueue[tuple[int, float, str]], ProcessPoolExecutor]:
        # A new report pipe too: a process killed in the middle of a report may have
        # left half a message in the old one, or its lock held.
        reports: SimpleQueue[tuple[int, float, str]] = self._context.SimpleQueue()
        executor = ProcessPoolExecutor(
            max_workers=self._processes,
            mp_context=self._context,
            initializer=_init_process,
            initargs=(reports, self._jobs),
        )
        return reports, executor

    async def run(
        self,
        fn: Callable[..., T],
        *args: Any,
        on_progress: ProgressListener | None = None,
        cancellation: Cancellation | None = None,
    ) -> T:
        """``fn(*args)`` in a pool process; its reports reach ``on_progress`` on the loop.

        Once ``cancellation`` is asked, the job's next ``report_progress`` raises
        TaskCancelled (so does its start, if it has not started); once forced, its
        process is killed and the pool replaced (this raises BrokenProcessPool).
        """
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
            loop.add_reader(self._report_fd, self._read_reports)
        job_id = next(self._job_ids)
        if on_progress is not None:
            self._listeners[job_id] = on_progress
        executor = self._executor
        try:
            with contextlib.ExitStack() as stack:
                if cancellation is not None:
                    stack.enter_context(
                        cancellation.hooks(
                            on_request=functools.partial(self._cancel, job_id),
                            on_force=functools.partial(self._kill, job_id),
                        )
                    )
                return await loop.run_in_executor(executor, _run_job, job_id, fn, args)
        except BrokenProcessPool:
            if executor is self._executor:
                logger.error("a process of the pool died; starting a new pool")
                self._restart(loop)
            raise
        finally:
            # A job writes its reports before its result: they are all in the pipe by now.
            self._read_reports()
            self._listeners.pop(job_id, None)
            self._jobs.cancelled[job_id % _JOB_SLOTS] = 0

    def _cancel(self, job_id: int) -> None:
        self._jobs.cancelled[job_id % _JOB_SLOTS] = job_id + 1

    def _kill(self, job_id: int) -> None:
        """Kill the process running ``job_id`` (a job not started yet raises at its start)."""
        pid = self._jobs.pid_of(job_id)
        if pid is not None:
            logger.warning("killing pool process %d: its job was cancelled and did not stop", pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def _restart(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.remove_reader(self._report_fd)
        broken, old_reports = self._executor, self._reports
        self._reports, self._executor = self._start()
        loop.add_reader(self._report_fd, self._read_reports)
        broken.shutdown(wait=False, cancel_futures=True)
        old_reports.close()

    async def shutdown(self) -> None:
        """Stop reading reports; wait, off the loop, for jobs already running to end."""
        if self._loop is not None:
            self._loop.remove_reader(self._report_fd)
            self._loop = None
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)
        self._reports.close()

    @property
    def _report_fd(self) -> int:
        return self._reports._reader.fileno()  # type: ignore[attr-defined]

    def _read_reports(self) -> None:
        reader = self._reports._reader  # type: ignore[attr-defined]
        while reader.poll(0):
            job_id, percent, message = reader.recv()
            listener = self._listeners.get(job_id)
            if listener is not None:
                listener(percent, message)


def report_progress(percent: float, message: str = "") -> None:
    """Report progress from a function that ``TaskContext.run_in_process`` runs.

    The worker publishes it as a ``progress`` event of the task that started the
    job. It raises TaskCancelled once the task is cancelled. Called anywhere else
    (directly, in a test) it does nothing.
    """
    if _reports is not None and _job_id is not None:
        if _jobs is not None and _jobs.is_cancelled(_job_id):
            raise TaskCancelled("the task was cancelled")
        _reports.put((_job_id, float(percent), message[:_MAX_MESSAGE_CHARS]))


# A short report is one write, which a pipe keeps whole even if its writer is killed.
_MAX_MESSAGE_CHARS = 500
# A pool process's side: where its reports go, and which job it is running.
_reports: SimpleQueue[tuple[int, float, str]] | None = None
_job_id: int | None = None
_jobs: _JobTable | None = None


def _run_job(job_id: int, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
    global _job_id
    _job_id = job_id
    slot = 2 * (job_id % _JOB_SLOTS)
    assert _jobs is not None
    _jobs.running[slot + 1] = os.getpid()
    _jobs.running[slot] = job_id + 1
    try:
        if _jobs.is_cancelled(job_id):
            raise TaskCancelled("the task was cancelled before its job started")
        return fn(*args)
    finally:
        _jobs.running[slot] = 0
        _job_id = None


def _init_process(reports: SimpleQueue[tuple[int, float, str]], jobs: _JobTable) -> None:
    global _reports, _jobs
    _reports = reports
    _jobs = jobs
    # Ctrl-C reaches the whole process group; the parent decides when the pool stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent()
    _exit_with_worker()
    _keep_freed_memory()


def die_with_parent() -> None:
    """Have the kernel kill this process when its parent dies (Linux), even by SIGKILL.

    Only a parent alive when this runs counts: the forkserver calls it first thing,
    and a worker killed before that leaves it to :func:`_exit_with_worker`.
    """
    try:
        _libc().prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass  # not Linux: a parent killed hard may leave its pool behind


def _exit_with_worker() -> None:
    """Exit as soon as the worker is gone, from a thread that waits for it.

    The parent-death signal reaches a pool process through the forkserver only, and
    a worker killed while its forkserver starts leaves one that never asked for it in
    time: it still forks the processes the worker had asked for (their start data is
    already in the pipe), and each holds the pipes whose closing would tell the
    forkserver and the resource tracker to exit. So each waits for the worker itself:
    the worker keeps the other end of its sentinel pipe open until it dies.
    """
    worker = multiprocessing.parent_process()
    if worker is None:
        return
    threading.Thread(
        target=_exit_when_ready, args=(worker.sentinel,), name="exit-with-worker", daemon=True
    ).start()


def _exit_when_ready(sentinel: int) -> None:
    multiprocessing.connection.wait([sentinel])
    os._exit(1)


def _keep_freed_memory() -> None:
    """Stop glibc from returning big image buffers to the OS after every task.

    A fresh process mmaps each multi-megabyte buffer and unmaps it on free, so
    every image pays its page faults again: about 10% of thumbnail throughput.
    """
    try:
        libc = _libc()
        libc.mallopt(_M_MMAP_THRESHOLD, _KEEP_BYTES)
        libc.mallopt(_M_TRIM_THRESHOLD, _KEEP_BYTES)
    except (OSError, AttributeError):
        pass  # not glibc: keep the defaults


def _libc() -> ctypes.CDLL:
    """The C library the interpreter already has loaded.

    Not ``ctypes.util.find_library``: it runs ``ldconfig`` in a child process, which
    would delay the forkserver's :func:`die_with_parent` by tens of milliseconds.
    """
    return ctypes.CDLL(None, use_errno=True)
