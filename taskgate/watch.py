"""``taskgate watch TASK_ID``: follow a task's status events (SSE) until it ends.

A dropped connection, a gateway restart or a stream the gateway ends early
(shutdown, slow client, token expiry) is not the end: the watcher connects
again after the stream's ``retry:`` delay and sends ``Last-Event-ID`` (the last
``id:`` it saw), so the gateway resumes right after it; no event is shown twice.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Mapping
from typing import Any

import httpx
import httpx_sse

from . import exits
from .commands import Subcommands, describe
from .display import TaskDisplay
from .errors import CommandError
from .gateway_client import (
    check,
    error_message,
    gateway_options,
    open_client,
    task_path,
)

TERMINAL_STATES = frozenset({"succeeded", "failed", "dead", "cancelled"})
# The named events that report the task; unnamed ones (retry hints) carry nothing to show.
STATE_EVENTS = frozenset(
    {"scheduled", "queued", "running", "progress", "retrying", "stuck", *TERMINAL_STATES}
)
RESET_EVENT = "reset"
# The gateway's default SSE_RETRY_MS, until a stream sends its own ``retry:``.
DEFAULT_RETRY_S = 2.0
DEFAULT_GIVE_UP_AFTER_S = 300.0
FOLLOW_CODES = exits.describe_codes(
    ok="the task succeeded",
    failure="the task failed, went dead or was cancelled; the gateway refused (e.g. 401,"
    " 404) or stayed away",
)


def add_watch_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--give-up-after",
        type=float,
        default=DEFAULT_GIVE_UP_AFTER_S,
        metavar="SECONDS",
        help="stop reconnecting after this long without the gateway "
        f"(default: {DEFAULT_GIVE_UP_AFTER_S:.0f})",
    )


def add_parser(commands: Subcommands) -> None:
    parser = describe(
        commands,
        "watch",
        "follow a task until it ends",
        "Follow a task's status events (GET /tasks/ID/events): one line per state on\n"
        "stdout, a progress bar on stderr, the result when it succeeds. Reconnects\n"
        "after a dropped connection and resumes after the last event seen.",
        FOLLOW_CODES,
        parents=[gateway_options()],
    )
    parser.add_argument("task_id", metavar="TASK_ID", help="as 'taskgate upload' printed it")
    parser.add_argument(
        "--after",
        type=int,
        default=None,
        metavar="N",
        help="start after event N (resume an earlier watch)",
    )
    add_watch_options(parser)
    parser.set_defaults(run=run)


class _Reconnect(Exception):
    """This connection is over but the task is not: connect again after the retry delay."""


class TaskWatcher:
    """Follows one task over as many connections as it takes."""

    def __init__(
        self,
        client: httpx.Client,
        task_id: str,
        *,
        display: TaskDisplay,
        after: int | None = None,
        give_up_after_s: float = DEFAULT_GIVE_UP_AFTER_S,
    ) -> None:
        self._client = client
        self._task_id = task_id
        self._display = display
        self._give_up_after_s = give_up_after_s
        self._last_event_id = None if after is None else str(after)
        self._retry_s = DEFAULT_RETRY_S
        # Reconnecting is for resuming: a gateway never reached is most likely a wrong URL.
        self._connected_once = False
        # Since when connections fail (None while one works), to tell it once and give up.
        self._failing_since: float | None = None

    @property
    def last_event_id(self) -> str | None:
        return self._last_event_id

    def run(self) -> str:
        """Follow the task until it ends; its final state."""
        while True:
            try:
                return self._follow()
            except _Reconnect as exc:
                reason = str(exc)
            except httpx.TransportError as exc:
                what = "connection lost" if self._connected_once else "cannot connect"
                reason = f"{what} ({str(exc) or type(exc).__name__})"
            self._wait_to_reconnect(reason)

    def _wait_to_reconnect(self, reason: str) -> None:
        if not self._connected_once:
            raise CommandError(f"cannot follow the task at {self._client.base_url}: {reason}")
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
            where = f" after event {self._last_event_id}" if self._last_event_id else ""
            self._display.notice(f"{reason}; reconnecting to resume{where}")
        elif now - self._failing_since > self._give_up_after_s:
            failing_s = now - self._failing_since
            raise CommandError(f"gave up after {failing_s:.0f} s without the gateway: {reason}")
        time.sleep(self._retry_s)

    def _follow(self) -> str:
        """One connection: the task's final state, or _Reconnect if it ended too soon."""
        headers = {"Last-Event-ID": self._last_event_id} if self._last_event_id else {}
        url = task_path(self._task_id, "/events")
        with httpx_sse.connect_sse(self._client, "GET", url, headers=headers) as source:
            response = source.response
            if response.status_code == 204:  # finished, and we have seen all of it
                return self._show_finished_task()
            if response.status_code >= 500:  # e.g. 503 while the gateway lost its broker
                response.read()
                raise _Reconnect(f"the gateway answered: {error_message(response)}")
            check(response)
            self._connected()
            try:
                for event in source.iter_sse():
                    state = self._on_event(event)
                    if state in TERMINAL_STATES:
                        return state
            except httpx_sse.SSEError as exc:  # a 200 that is not an event stream
                raise CommandError(f"{url} did not answer with an event stream: {exc}") from None
        raise _Reconnect("the gateway ended the stream")

    def _connected(self) -> None:
        self._connected_once = True
        if self._failing_since is not None:
            self._display.notice("reconnected")
            self._failing_since = None

    def _on_event(self, event: httpx_sse.ServerSentEvent) -> str | None:
        """Show ``event``; the state it reports, if it reports one."""
        if event.retry is not None:
            self._retry_s = event.retry / 1000
        if event.event == RESET_EVENT:
            # Our Last-Event-ID meant nothing to this gateway (another store?): the
            # task's whole history follows, from event 1.
            self._display.notice("the gateway does not know our position; replaying the history")
            return None
        if event.event not in STATE_EVENTS:
            return None
        self._last_event_id = event.id
        data: Mapping[str, Any] = json.loads(event.data)
        if event.event == "progress":
            self._display.progress(data)
        else:
            self._display.state(data)
        return event.event

    def _show_finished_task(self) -> str:
        view = check(self._client.get(task_path(self._task_id))).json()
        self._display.state(view)
        return str(view["state"])


def exit_code(state: str) -> int:
    return exits.OK if state == "succeeded" else exits.FAILURE


def watch(
    args: argparse.Namespace, client: httpx.Client, task_id: str, after: int | None = None
) -> int:
    """Follow ``task_id`` to its end with ``client``; the command's exit code."""
    display = TaskDisplay()
    watcher = TaskWatcher(
        client, task_id, display=display, after=after, give_up_after_s=args.give_up_after
    )
    try:
        return exit_code(watcher.run())
    except KeyboardInterrupt:
        if watcher.last_event_id:
            display.notice(f"resume with: taskgate watch {task_id} --after {watcher.last_event_id}")
        raise


def run(args: argparse.Namespace) -> int:
    with open_client(args) as client:
        return watch(args, client, args.task_id, args.after)
