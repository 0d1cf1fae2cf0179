"""Inspect, replay and discard dead letters: ``python -m workers.dead list|show|replay KIND``,
``discard KIND ID...``.

``list`` and ``show`` take the messages without acking and give them all back
when done, so they stay in the dead queue in their order. ``replay`` moves each
message back to ``tasks`` (attempt 1, a fresh ``queued`` event), acking the dead
copy only once the broker confirmed the replayed one. It leaves where it is a
dead letter that did not come from a sender the workers take tasks from, or
that copies a message which did not (workers/senders.py): anyone who writes to
the default exchange can put a message into a dead queue, and a replayed task
goes out as the replayer's.

The gateway's admin view uses the same functions on chosen messages
(``message_ids``, as ``message_key`` names them): ``replay`` and ``discard``
(ack) those, and give every other message back in its order. A replayed task's
``queued`` event goes to ``announce``: the CLI publishes it, the gateway (which
may not publish status events) records it in its store itself. Either way it is
recorded before the task can run again, and brings the ``dead`` task back
(gateway/store.py, ``reopens``).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from infra.process import run
from rpc.connection import connect_wire, tls_options
from rpc.errors import BrokerRefused, BrokerUnavailable
from rpc.publish import persistent_copy, publish_confirmed
from rpc.wire import (
    BrokerError,
    Channel,
    ChannelClosed,
    Delivery,
    Properties,
    Unavailable,
    WireConnection,
)

from .errors import UnknownKind
from .messages import StatusEvent, Undecodable, decode_message, new_event, task_decoder
from .senders import Senders, task_senders
from .settings import WorkerSettings
from .status import publish_status
from .topology import (
    ATTEMPT_HEADER,
    DIED_AT_HEADER,
    QUEUE_HEADER,
    REASON_HEADER,
    REPLAYED_HEADER,
    SENDER_HEADER,
    TASKS_EXCHANGE,
    TRACEBACK_HEADER,
    dead_queue,
    declare_kind,
    declare_status_exchange,
)

# Chosen messages are looked for among the first this many of their queue (what a look
# shows): a choice of one missing id does not take a whole long queue out and back.
CHOOSE_WITHIN = 1_000
# The message of a replayed task's ``queued`` event.
REPLAYED_MESSAGE = "replayed from its dead queue"

# Headers that describe the last death, not the task; a replayed message starts without them.
_DEATH_HEADERS = (
    DIED_AT_HEADER,
    REASON_HEADER,
    TRACEBACK_HEADER,
    QUEUE_HEADER,
    SENDER_HEADER,
    "x-death",
    "x-first-death-",
)


async def peek(connection: WireConnection, kind: str, limit: int | None = None) -> list[Delivery]:
    """Up to ``limit`` dead letters of ``kind``, oldest first, left in the queue."""
    return await peek_queue(connection, dead_queue(kind), limit)


async def peek_queue(
    connection: WireConnection, queue: str, limit: int | None = None
) -> list[Delivery]:
    """Up to ``limit`` messages of ``queue`` (any dead queue), oldest first, left in it."""
    raw = await connection.raw_channel()
    messages: list[Delivery] = []
    try:
        # Not the count a passive declare gives: a quorum queue may answer it before it has
        # taken back what the previous look gave back, and say 0.
        while limit is None or len(messages) < limit:
            message = await raw.basic_get(queue)
            if message is None:
                break
            messages.append(message)
        return messages
    finally:
        # Given back one by one, in order, before the channel closes: a quorum queue takes
        # back what a closed channel held only once it hears the channel is gone, after the
        # close is confirmed, and a look or replay right after this one would miss them.
        if raw.closed is None:
            for message in messages:
                raw.basic_nack(message.delivery_tag, requeue=True)
        await raw.close()


async def replay(
    connection: WireConnection,
    kind: str,
    limit: int | None = None,
    on_replayed: Callable[[str], None] | None = None,
    *,
    max_length: int,
    on_left: Callable[[str, str], None] | None = None,
    message_ids: set[str] | None = None,
    announce: Callable[[StatusEvent], Awaitable[None]] | None = None,
) -> int:
    """Move up to ``limit`` dead letters of ``kind`` back to its queue; return how many.

    ``max_length`` is the kind's queue length limit, as every process declares it
    (``WorkerSettings.queue_max_length``): the broker refuses any other. A dead letter
    from an untrusted sender stays, and ``on_left`` gets its label and why.
    ``message_ids``: only those (``message_key``), each removed from the set once found (what
    is left in it was not there); the others stay, in their order.
    ``announce``: what records a replayed task's ``queued`` event (default: publish it).
    """

    async def declare(raw: Channel) -> None:
        await declare_status_exchange(raw)
        await declare_kind(raw, kind, max_length=max_length)

    senders = task_senders(connection.user_id)
    channel = await connection.open_channel(declare, publisher_confirms=True)
    replayed = 0
    left: list[Delivery] = []
    wanted = message_ids
    skipped = 0  # not chosen
    raw = await channel.get_underlay_channel()

    async def publish(event: StatusEvent) -> None:
        await publish_status(channel, event)

    try:
        while (limit is None or replayed < limit) and _looking(wanted, skipped):
            message = await raw.basic_get(dead_queue(kind))
            if message is None:
                break
            if wanted is not None:
                if message_key(message) not in wanted:
                    left.append(message)
                    skipped += 1
                    continue
                wanted.discard(message_key(message))
            why = _untrusted(senders, message)
            if why is not None:
                left.append(message)  # unacked: this channel does not get it again
                if on_left is not None:
                    on_left(_label(message), why)
                continue
            properties = message.properties
            headers = {
                k: v
                for k, v in (properties.headers or {}).items()
                if not k.startswith(_DEATH_HEADERS)
            }
            headers[ATTEMPT_HEADER] = 1
            previous = headers.get(REPLAYED_HEADER, 0)
            headers[REPLAYED_HEADER] = (previous if isinstance(previous, int) else 0) + 1
            task_id = _task_id(message)
            if task_id is not None:
                queued = new_event(kind, task_id, "queued", 1, message=REPLAYED_MESSAGE)
                await (announce or publish)(queued)
            routed = await publish_confirmed(
                channel,
                message.body,
                exchange=TASKS_EXCHANGE,
                routing_key=kind,
                properties=persistent_copy(properties, headers),
                mandatory=True,
            )
            if not routed:
                raise UnknownKind(f"no queue is bound to {TASKS_EXCHANGE!r} for {kind!r}")
            raw.basic_ack(message.delivery_tag)
            replayed += 1
            if on_replayed is not None:
                on_replayed(_label(message))
    finally:
        if raw.closed is None:
            for message in left:
                raw.basic_nack(message.delivery_tag, requeue=True)
        await channel.close()
    return replayed


async def discard(connection: WireConnection, queue: str, message_ids: set[str]) -> int:
    """Remove (ack) the messages of ``queue`` named in ``message_ids`` (``message_key``), each
    removed from the set once found; give the others back in their order. How many were
    removed."""
    wanted = message_ids
    raw = await connection.raw_channel()
    left: list[Delivery] = []
    removed = 0
    try:
        while _looking(wanted, len(left)):
            message = await raw.basic_get(queue)
            if message is None:
                break
            key = message_key(message)
            if key in wanted:
                wanted.discard(key)
                raw.basic_ack(message.delivery_tag)
                removed += 1
            else:
                left.append(message)
        return removed
    finally:
        if raw.closed is None:
            for message in left:
                raw.basic_nack(message.delivery_tag, requeue=True)
        await raw.close()


def _looking(wanted: set[str] | None, skipped: int) -> bool:
    """Whether to take another message: all (None), or chosen ones still not found within
    CHOOSE_WITHIN."""
    return wanted is None or (bool(wanted) and skipped < CHOOSE_WITHIN)


def message_key(message: Delivery) -> str:
    """What names a dead letter to choose it: its message_id, else a hash of its body."""
    if message.properties.message_id:
        return str(_text(message.properties.message_id))
    return "sha256:" + hashlib.sha256(message.body).hexdigest()[:32]


def _untrusted(senders: Senders, message: Delivery) -> str | None:
    """Why a dead letter may not go back (None: it may): it, or the message it copies
    (SENDER_HEADER, written by rpc.dead_letter), came from an untrusted sender."""
    why = senders.refusal(message.properties)
    original = (message.properties.headers or {}).get(SENDER_HEADER)
    if why is None and original is not None:
        why = senders.refusal(Properties(user_id=_text(original) or None))
        if why is not None:
            why = f"it copies a message from an {why}"
    return why


def _task_id(message: Delivery) -> str | None:
    try:
        return decode_message(task_decoder, message.body, "task message").task_id
    except Undecodable:
        return None


def _label(message: Delivery) -> str:
    """What names a dead letter to an operator: its message_id, else its task's id,
    else the start of its body."""
    if message.properties.message_id:
        return str(_text(message.properties.message_id))
    task_id = _task_id(message)
    if task_id is not None:
        return task_id
    body = message.body[:_BODY_LABEL_BYTES].decode(errors="replace")
    more = "..." if len(message.body) > _BODY_LABEL_BYTES else ""
    return f"(no message_id, body {body!r}{more})"


_BODY_LABEL_BYTES = 60


def _text(value: Any) -> Any:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _print_message(message: Delivery, *, full: bool) -> None:
    properties = message.properties
    headers = properties.headers or {}
    if not full:
        attempt = _text(headers.get(ATTEMPT_HEADER))
        # No reason header: the broker buried it itself (x-delivery-limit), see x-death.
        reason = _text(headers.get(REASON_HEADER) or "dead-lettered by the broker (see x-death)")
        print(f"{_label(message)}\tattempt={attempt}\t{reason}")
        return
    print(f"--- {_label(message)}")
    for key, value in sorted(headers.items()):
        if key != "x-death":
            print(f"{key}: {_text(value)}")
    print(message.body.decode(errors="replace"))


async def _run(args: argparse.Namespace, settings: WorkerSettings) -> int:
    connection = await connect_wire(
        settings.amqp_url, name="workers.dead", tls=tls_options(settings)
    )
    try:
        if args.command == "replay":
            count = await replay(
                connection,
                args.kind,
                args.limit,
                on_replayed=lambda label: print(f"replayed {label}"),
                max_length=settings.queue_max_length,
                on_left=lambda label, why: print(f"left {label}: {why}"),
            )
            print(f"replayed {count} dead letters of {args.kind}")
            return 0
        if args.command == "discard":
            wanted = set(args.ids)
            removed = await discard(connection, dead_queue(args.kind), wanted)
            for missing in sorted(wanted):
                print(f"not found: {missing}")
            print(f"discarded {removed} dead letters of {args.kind}")
            return 0 if not wanted else 1
        messages = await peek(connection, args.kind, args.limit)
        if not messages:
            print(f"no dead letters for {args.kind}")
        for message in messages:
            _print_message(message, full=args.command == "show")
        return 0
    except ChannelClosed as exc:
        if exc.code == 406:
            # The kind's queue exists with other arguments than ours.
            print(
                f"error: {exc}\n(TASK_QUEUE_MAX_LENGTH, {settings.queue_max_length} here, "
                "must be the workers')",
                file=sys.stderr,
            )
            return 1
        if exc.code != 404:
            raise
        print(f"error: no dead-letter queue for {args.kind!r}", file=sys.stderr)
        return 1
    finally:
        await connection.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.dead", description=__doc__)
    parser.add_argument("command", choices=["list", "show", "replay", "discard"])
    parser.add_argument("kind", help="task kind, e.g. images.thumbnail")
    parser.add_argument("ids", nargs="*", help="discard: the messages' message_id")
    parser.add_argument("--limit", type=int, default=None, help="at most this many messages")
    args = parser.parse_args(argv)
    settings = WorkerSettings.from_env()
    try:
        return run(_run(args, settings))
    except (BrokerUnavailable, Unavailable) as exc:
        print(f"error: broker unavailable: {exc}", file=sys.stderr)
        return 1
    except (BrokerRefused, BrokerError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
