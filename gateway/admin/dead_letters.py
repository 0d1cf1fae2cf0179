"""``/admin/api/dead``: the dead queues, their messages, and replaying or discarding them.

Dead queues: ``tasks.<kind>.dead`` of every kind a worker registered (and the
upload kind), ``status.dead`` (status events the recorder refused) and
``orders.<service>.dead``. Every one can be shown and its messages discarded;
only a task's dead letter can be replayed (``workers.dead.replay``, with its
sender check): a refused status event is refused again, and an order's event is
for its consumer to take again from ``orders`` (left to ``taskgate``'s tools).

The gateway does this as its own broker user, which may read the dead queues for
it (docs/security.md); a replayed task is the gateway's, as the task it first
accepted was, so the workers' sender check takes it. Its ``queued`` event is
recorded here, before the task is published, and brings the ``dead`` task back.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any, TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse

from infra.database import Database
from rpc.errors import BrokerRefused, BrokerUnavailable
from rpc.wire import BrokerError, ChannelClosed, Delivery, Unavailable, WireConnection
from workers import dead, kinds
from workers.messages import (
    StatusEvent,
    Undecodable,
    decode_message,
    encoder,
    new_event,
    task_decoder,
)
from workers.shop.contracts import ORDER_QUEUES
from workers.topology import (
    ATTEMPT_HEADER,
    DIED_AT_HEADER,
    QUEUE_HEADER,
    REASON_HEADER,
    STATUS_DEAD_QUEUE,
    dead_queue,
)

from ..bodies import decode_json, read_body
from ..broker import BrokerLink
from ..errors import HttpError, unavailable
from ..openapi import documented
from ..publisher import Publisher
from ..settings import GatewaySettings
from ..store import StoredEvent, TaskStore
from ..task_cancel import announce_recorded
from .access import require_admin
from .api_types import DeadMessages, DeadQueues, Discarded, Replayed

T = TypeVar("T")

BODY_BYTES = 4096
DEFAULT_LIMIT = 50
MAX_LIMIT = 500


class Chosen(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The body of replay and discard: the messages' ids, as the list shows them."""

    message_ids: list[str] = msgspec.field(default_factory=list)


_chosen = msgspec.json.Decoder(Chosen)


async def dead_queues(request: Request) -> dict[str, str | None]:
    """Every dead queue an admin may look at, with its task kind (None: not a task's)."""
    database: Database = request.app.state.database
    settings: GatewaySettings = request.app.state.settings
    names = {settings.upload_kind, *(await database.read(kinds.registered))}
    queues: dict[str, str | None] = {dead_queue(kind): kind for kind in sorted(names)}
    queues[STATUS_DEAD_QUEUE] = None
    queues.update({f"{queue}.dead": None for queue in ORDER_QUEUES})
    return queues


@documented("The dead-letter queues", responses={200: DeadQueues}, auth="admin")
async def list_dead_queues(request: Request) -> JSONResponse:
    require_admin(request)
    queues = await dead_queues(request)

    async def count_all(connection: WireConnection) -> list[dict[str, Any]]:
        found = []
        raw = await connection.raw_channel()
        try:
            for queue, kind in queues.items():
                try:
                    count = (await raw.queue_declare(queue, passive=True)).message_count
                except ChannelClosed as exc:
                    if exc.code != 404:
                        raise
                    count = 0  # not declared yet: nothing has died there
                    raw = await connection.raw_channel()
                found.append({"queue": queue, "kind": kind, "count": count})
        finally:
            if raw.closed is None:
                await raw.close()
        return found

    return JSONResponse({"queues": await _on_broker(request, count_all)})


@documented(
    "The first messages of a dead-letter queue",
    responses={200: DeadMessages},
    errors=(404, 422),
    auth="admin",
    query={"limit": Annotated[int, msgspec.Meta(ge=1, le=MAX_LIMIT)]},
)
async def show_dead_queue(request: Request) -> JSONResponse:
    require_admin(request)
    queue, _ = await _chosen_queue(request)
    limit = _limit(request.query_params.get("limit"))
    messages = await _on_broker(request, lambda c: dead.peek_queue(c, queue, limit))
    return JSONResponse({"messages": [message_view(message) for message in messages or []]})


@documented(
    "Replay dead messages to their task queue",
    responses={200: Replayed},
    body=Chosen,
    errors=(404, 409),
    auth="admin",
)
async def replay_dead(request: Request) -> JSONResponse:
    require_admin(request)
    queue, kind = await _chosen_queue(request)
    if kind is None:
        raise HttpError(409, "not_replayable", f"the messages of {queue!r} cannot be replayed")
    wanted = decode_json(await read_body(request), _chosen).message_ids
    settings: GatewaySettings = request.app.state.settings
    store: TaskStore = request.app.state.store
    publisher: Publisher = request.app.state.publisher
    left: list[dict[str, str]] = []
    # Tasks whose queued event is recorded and whose message is not back in its queue yet.
    pending: set[str] = set()

    async def record(event: StatusEvent) -> None:
        (stored,) = await store.record([(event, encoder.encode(event))])
        if isinstance(stored, StoredEvent):
            await announce_recorded(publisher, stored)
        pending.add(event.task_id)

    unseen = set(wanted)
    try:
        count = await _on_broker(
            request,
            lambda connection: dead.replay(
                connection,
                kind,
                max_length=settings.queue_max_length,
                message_ids=unseen,
                announce=record,
                on_replayed=pending.discard,  # its label: the message_id, the task's id
                on_left=lambda label, why: left.append({"message_id": label, "reason": why}),
            ),
        )
    except Exception as exc:
        # The dead letter stays where it was (unacked, given back): so does its task.
        for task_id in sorted(pending):
            await record(new_event(kind, task_id, "dead", 1, error=f"replay failed: {exc}"))
        raise
    missing = [message_id for message_id in wanted if message_id in unseen]
    return JSONResponse({"replayed": count or 0, "missing": missing, "left": left})


@documented(
    "Discard dead messages",
    responses={200: Discarded},
    body=Chosen,
    errors=(404,),
    auth="admin",
)
async def discard_dead(request: Request) -> JSONResponse:
    require_admin(request)
    queue, _ = await _chosen_queue(request)
    wanted = decode_json(await read_body(request), _chosen).message_ids
    unseen = set(wanted)
    removed = await _on_broker(request, lambda c: dead.discard(c, queue, unseen))
    missing = [message_id for message_id in wanted if message_id in unseen]
    return JSONResponse({"discarded": removed or 0, "missing": missing})


async def _on_broker(request: Request, work: Callable[[WireConnection], Awaitable[T]]) -> T | None:
    """``work`` on the gateway's connection; None if its queue was never declared (so it
    holds nothing). 503 while the broker is away; a refusal is BrokerRefused (500)."""
    broker: BrokerLink = request.app.state.broker
    try:
        return await work(broker.connection)
    except ChannelClosed as exc:
        if exc.code == 404:
            return None
        raise BrokerRefused(exc.code, exc.text) from exc
    except (BrokerUnavailable, Unavailable) as exc:
        raise unavailable(f"the broker is away: {exc}") from None
    except BrokerError as exc:
        raise BrokerRefused(exc.code, exc.text) from exc


def message_view(message: Delivery) -> dict[str, Any]:
    headers = message.properties.headers or {}
    death = _first_death(headers)
    died_at = headers.get(DIED_AT_HEADER)
    return {
        "message_id": dead.message_key(message),
        "task_id": _task_id(message),
        "attempt": _int(headers.get(ATTEMPT_HEADER)),
        # No reason header: the broker buried it itself (x-delivery-limit); x-death says why.
        "reason": _text(headers.get(REASON_HEADER) or death.get("reason")),
        "from_queue": _text(headers.get(QUEUE_HEADER) or death.get("queue")),
        "died_at": died_at / 1000 if isinstance(died_at, int) else _time(death.get("time")),
        "headers": _json_safe(headers),
        "body": message.body[:BODY_BYTES].decode(errors="replace"),
    }


async def _chosen_queue(request: Request) -> tuple[str, str | None]:
    """The dead queue the path names and its kind; 404 for any other queue."""
    queue = request.path_params["queue"]
    queues = await dead_queues(request)
    if queue not in queues:
        raise HttpError(404, "not_found", f"no dead queue {queue!r}")
    return queue, queues[queue]


def _limit(text: str | None) -> int:
    if text is None:
        return DEFAULT_LIMIT
    if not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
        raise HttpError(422, "invalid_query", f"limit must be 1..{MAX_LIMIT}", path="limit")
    return int(text)


def _task_id(message: Delivery) -> str | None:
    """The task the message is about: a task message's id, a status event's correlation_id."""
    try:
        return decode_message(task_decoder, message.body, "task").task_id
    except Undecodable:
        correlation = message.properties.correlation_id
        return str(_text(correlation)) if correlation else None


def _first_death(headers: dict[str, Any]) -> dict[str, Any]:
    deaths = headers.get("x-death")
    return deaths[0] if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict) else {}


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _time(value: Any) -> float | None:
    return value.timestamp() if isinstance(value, datetime) else None


def _text(value: Any) -> Any:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _json_safe(value: Any) -> Any:
    """An AMQP header value as JSON: text for bytes, Unix seconds for times."""
    if isinstance(value, dict):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, datetime):
        return value.timestamp()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)
