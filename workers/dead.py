"""Inspect and replay dead letters: ``python -m workers.dead list|show|replay KIND``.

``list`` and ``show`` take the messages without acking and give them all back
when done, so they stay in the dead queue in their order. ``replay`` moves each
message back to ``tasks`` (attempt 1, a fresh ``queued`` event), acking the dead
copy only once the broker confirmed the replayed one. It leaves where it is a
dead letter that did not come from a sender the workers take tasks from, or
that copies a message which did not (workers/senders.py): anyone who writes to
the default exchange can put a message into a dead queue, and a replayed task
goes out as the replayer's.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
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
from .messages import Undecodable, decode_message, new_event, task_decoder
from .senders import Senders, task_senders
from .settings import WorkerSettings
from .status import publish_status
from .topology import (
    ATTEMPT_HEADER,
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

# Headers that describe the last death, not the task; a replayed message starts without them.
_DEATH_HEADERS = (
    REASON_HEADER,
    TRACEBACK_HEADER,
    QUEUE_HEADER,
    SENDER_HEADER,
    "x-death",
    "x-first-death-",
)


async def peek(connection: WireConnection, kind: str, limit: int | None = None) -> list[Delivery]:
    """Up to ``limit`` dead letters of ``kind``, oldest first, left in the queue."""
    raw = await connection.raw_channel()
    messages: list[Delivery] = []
    try:
        # Not the count a passive declare gives: a quorum queue may answer it before it has
        # taken back what the previous look gave back, and say 0.
        while limit is None or len(messages) < limit:
            message = await raw.basic_get(dead_queue(kind))
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
) -> int:
    """Move up to ``limit`` dead letters of ``kind`` back to its queue; return how many.

    ``max_length`` is the kind's queue length limit, as every process declares it
    (``WorkerSettings.queue_max_length``): the broker refuses any other. A dead letter
    from an untrusted sender stays, and ``on_left`` gets its label and why.
    """

    async def declare(raw: Channel) -> None:
        await declare_status_exchange(raw)
        await declare_kind(raw, kind, max_length=max_length)

    senders = task_senders(connection.user_id)
    channel = await connection.open_channel(declare, publisher_confirms=True)
    replayed = 0
    left: list[Delivery] = []
    raw = await channel.get_underlay_channel()
    try:
        while limit is None or replayed < limit:
            message = await raw.basic_get(dead_queue(kind))
            if message is None:
                break
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
                await publish_status(channel, new_event(kind, task_id, "queued", 1))
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
    parser.add_argument("command", choices=["list", "show", "replay"])
    parser.add_argument("kind", help="task kind, e.g. images.thumbnail")
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
