"""Errors of the task runtime.

    WorkerError
    ├── TaskError              raised by task handlers to say how an attempt ended
    │   ├── RetryableError     try again after the next delay tier (alias: Retry)
    │   └── PermanentError     fail now, never retry (bad input, policy violation)
    │       ├── InvalidInput   the payload or the file it names was rejected
    │       └── UntrustedSender  a message from a broker user that may not send it
    ├── LeaseLost              another worker took the task over (this one was stopped)
    ├── TaskCancelled          the task was cancelled (``ctx.progress``, ``report_progress``)
    ├── SubmitError            a task could not be submitted
    │   └── UnknownKind        no queue takes the kind (the broker returned the message)
    └── WaitTimeout            no terminal status within the caller's timeout

A handler raising anything else is treated as retryable: a bug fixed and a
dead letter replayed beats a task silently lost. When the broker is down the
API raises :class:`rpc.errors.BrokerUnavailable`, the same error RPC callers see.
"""

from __future__ import annotations


class WorkerError(Exception):
    """Base class of every error raised by :mod:`workers`."""


class TaskError(WorkerError):
    """Raised by a handler; the message is the reason shown in status events and dead letters."""


class RetryableError(TaskError):
    """The attempt failed for a reason that may pass (a service down, a lock held)."""


Retry = RetryableError


class PermanentError(TaskError):
    """The task can never succeed as submitted; it fails at once."""


class InvalidInput(PermanentError):
    """The payload, or the file it names, was rejected."""


class UntrustedSender(PermanentError):
    """A message whose ``user_id`` is not one of its consumer's senders (workers/senders.py).

    A task so refused is dead-lettered without a ``dead`` event: its id may be another's."""


class TaskCancelled(WorkerError):
    """The task was cancelled (``DELETE /tasks/{id}``): raised by ``ctx.progress`` and, in a
    pool job, by ``report_progress``. A handler may clean up (``finally``); once cancelled,
    any exception ends the attempt ``cancelled`` without a retry (a result still counts)."""


class SubmitError(WorkerError):
    """A task could not be submitted."""


class UnknownKind(SubmitError):
    """No queue is bound for the task kind."""


class WaitTimeout(WorkerError, TimeoutError):
    """No terminal status arrived within the caller's timeout."""


class LeaseLost(WorkerError):
    """Another worker took this task over: this one's lease ran out (it was stopped or cut
    off), so it must neither go on with the task nor finish it. Raised by ``ctx.progress``."""
