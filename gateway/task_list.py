"""``GET /tasks?state=&kind=&since=&limit=&cursor=``: the caller's tasks (an admin's: all),
newest first, a page at a time.

The cursor is opaque to clients: the ``(created_at, task_id)`` of a page's last
task, base64url JSON. The next page starts below it (keyset pagination on the
``tasks_owner_created`` / ``tasks_created`` indexes), so a page costs the same
however deep it is, and tasks created meanwhile do not shift it.
"""

from __future__ import annotations

import base64
import binascii
import math
from dataclasses import replace
from datetime import UTC, datetime
from typing import Annotated, Literal, get_args

import msgspec
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import JSONResponse

from workers.messages import State

from .auth import authenticate
from .errors import HttpError
from .openapi import documented
from .store import TaskQuery, TaskStore
from .views import TaskView, task_view

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
# The states a task's summary can be in (a progress event leaves it running).
LISTED_STATES = frozenset(get_args(State)) - {"progress"}
MAX_KIND_CHARS = 200
_cursor_decoder = msgspec.json.Decoder(tuple[float, str])


class TaskPage(msgspec.Struct, frozen=True):
    """A page of tasks; ``next_cursor`` asks for the next one (None: this is the last)."""

    tasks: list[TaskView]
    next_cursor: str | None


@documented(
    "The caller's tasks (an admin's: all), newest first",
    responses={200: TaskPage},
    errors=(400,),
    query={
        "state": Literal[tuple(sorted(LISTED_STATES))],
        "kind": Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_KIND_CHARS)],
        "since": Annotated[str, msgspec.Meta(min_length=1)],
        "limit": Annotated[int, msgspec.Meta(ge=1, le=MAX_LIMIT)],
        "cursor": Annotated[str, msgspec.Meta(min_length=1)],
    },
)
async def list_tasks(request: Request) -> JSONResponse:
    user = authenticate(request)
    query = parse_query(request.query_params, owner=None if user.admin else user.user_id)
    store: TaskStore = request.app.state.store
    tasks = await store.list_tasks(replace(query, limit=query.limit + 1))
    page = tasks[: query.limit]
    more = len(tasks) > query.limit
    return JSONResponse(
        {
            "tasks": [task_view(task) for task in page],
            "next_cursor": encode_cursor(page[-1].created_at, page[-1].task_id) if more else None,
        }
    )


def parse_query(params: QueryParams, *, owner: str | None) -> TaskQuery:
    """The TaskQuery of the request's parameters; 400 naming the first bad one."""
    get = params.get
    unknown = set(params.keys()) - {"state", "kind", "since", "limit", "cursor"}
    if unknown:
        raise _bad(sorted(unknown)[0], "unknown parameter")
    state = get("state")
    if state is not None and state not in LISTED_STATES:
        raise _bad("state", f"one of {', '.join(sorted(LISTED_STATES))}")
    kind = get("kind")
    if kind is not None and not 0 < len(kind) <= MAX_KIND_CHARS:
        raise _bad("kind", f"1 to {MAX_KIND_CHARS} characters")
    since_text, cursor = get("since"), get("cursor")
    since = None if since_text is None else _parse_time(since_text)
    limit = _parse_limit(get("limit"))
    before = None if cursor is None else decode_cursor(cursor)
    return TaskQuery(limit=limit, owner=owner, state=state, kind=kind, since=since, before=before)


def encode_cursor(created_at: float, task_id: str) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode((created_at, task_id))).decode()


def decode_cursor(text: str) -> tuple[float, str]:
    try:
        created_at, task_id = _cursor_decoder.decode(base64.urlsafe_b64decode(text.encode()))
        if math.isfinite(created_at):
            return created_at, task_id
    except (binascii.Error, ValueError, msgspec.DecodeError):
        pass
    raise _bad("cursor", "not a cursor this API returned")


def _parse_time(text: str) -> float:
    """Unix seconds, or an ISO 8601 time (UTC unless it says otherwise)."""
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds):
            raise _bad("since", "a finite number of Unix seconds")
        return seconds
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise _bad("since", "Unix seconds or an ISO 8601 time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _parse_limit(text: str | None) -> int:
    if text is None:
        return DEFAULT_LIMIT
    if not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
        raise _bad("limit", f"a whole number from 1 to {MAX_LIMIT}")
    return int(text)


def _bad(parameter: str, expected: str) -> HttpError:
    return HttpError(400, "invalid_query", f"{parameter}: {expected}", path=f"$.{parameter}")
