"""Task runtime (consume, ack, retry, dead-letter, progress) and the built-in tasks.

Python programs submit tasks and follow them with :class:`TaskSubmitter`. The
gateway imports only the contract modules (messages, topology, image and shop
contracts, settings): ``tests/test_layers.py`` keeps it so.
"""

from .context import TaskContext
from .errors import (
    InvalidInput,
    LeaseLost,
    PermanentError,
    Retry,
    RetryableError,
    SubmitError,
    TaskCancelled,
    TaskError,
    UnknownKind,
    WaitTimeout,
    WorkerError,
)
from .messages import TERMINAL_STATES, State, StatusEvent, TaskMessage
from .pool import report_progress
from .registry import TaskRegistry
from .runtime import Worker
from .settings import WorkerSettings
from .submit import TaskSubmitter

__all__ = [
    "TERMINAL_STATES",
    "InvalidInput",
    "LeaseLost",
    "PermanentError",
    "Retry",
    "RetryableError",
    "State",
    "StatusEvent",
    "SubmitError",
    "TaskCancelled",
    "TaskContext",
    "TaskError",
    "TaskMessage",
    "TaskRegistry",
    "TaskSubmitter",
    "UnknownKind",
    "WaitTimeout",
    "Worker",
    "WorkerError",
    "WorkerSettings",
    "report_progress",
]
