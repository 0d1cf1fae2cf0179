"""``taskgate migrate-queues [QUEUE ...]``: turn the retry tiers and dead queues an older
taskgate declared (classic queues) into the quorum queues this one declares.

RabbitMQ cannot change a queue's type, and refuses (406) a declaration that differs
from the queue there. So each such queue is emptied into a holding quorum queue
(``<queue>.migrating``), deleted, declared anew and refilled, every message acked
at its source only once the broker confirmed its copy: a crash leaves each message
in one of the two queues (or, at worst, in both), and running the command again
finishes the move. A retry keeps its routing key (its task kind) through the
holding queue in a header, so it goes back to its kind when its delay is over.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable, Iterable

from rpc.connection import connect_wire, tls_options
from rpc.errors import BrokerRefused, BrokerUnavailable
from rpc.publish import publish_confirmed
from rpc.topology import DEAD_QUEUE as RPC_DEAD_QUEUE
from rpc.wire import BrokerError, Channel, ChannelClosed, Unavailable, WireConnection
from workers.topology import (
    dead_queue_arguments,
    declare_dead_queue,
    declare_retry_tier,
    retry_tier,
    tier_delay_ms,
)

from . import exits, queues, settings
from .amqp_address import AmqpAddress
from .commands import Subcommands, describe
from .errors import CommandError, usage_error

HOLDING_SUFFIX = ".migrating"
# A message's routing key while it waits in a holding queue.
ROUTE_HEADER = "x-taskgate-migrating-routing-key"
# Dead queues that other parts declare themselves, with arguments of their own.
NOT_OURS = frozenset({RPC_DEAD_QUEUE})
NOT_FOUND = 404
PRECONDITION_FAILED = 406

Declare = Callable[[Channel], Awaitable[None]]


def add_parser(commands: Subcommands) -> None:
    parser = describe(
        commands,
        "migrate-queues",
        "turn classic retry tiers and dead queues into quorum queues, keeping messages",
        "Upgrade the broker at $AMQP_URL for this taskgate: its retry tiers\n"
        "(tasks.retry.DELAY) and dead-letter queues (*.dead) are quorum queues, where an\n"
        "older taskgate declared classic ones, and the broker refuses to declare a queue\n"
        "over one of another type. Each such queue is moved to QUEUE.migrating, declared\n"
        "anew and refilled; every message is acked at its source only once the broker\n"
        "confirmed its copy, so none is lost, and running the command again finishes an\n"
        "interrupted move. Stop every taskgate process first (workers and gateway): a\n"
        "retry or dead letter sent while its queue is being replaced would be lost.\n"
        "Without QUEUE, the queues come from the management API or rabbitmqctl, as for\n"
        "'taskgate queues'.",
        exits.describe_codes(
            ok="every queue is a quorum queue now (or already was)",
            failure="the broker cannot be reached, or refused a step (the message says\n"
            "which; nothing was lost, run the command again)",
        ),
    )
    parser.add_argument(
        "queue", nargs="*", metavar="QUEUE", help="only these queues (default: all of them)"
    )
    parser.add_argument(
        "--management-url",
        metavar="URL",
        help="the management API to list the queues with (see: taskgate queues --help)",
    )
    parser.set_defaults(run=run)


def target(queue: str) -> Declare | None:
    """How this taskgate declares ``queue``; None if the command leaves it alone."""
    delay_ms = tier_delay_ms(queue)
    if delay_ms is not None:
        return lambda channel: declare_retry_tier(channel, delay_ms)
    if queue.endswith(".dead") and queue not in NOT_OURS:
        return lambda channel: declare_dead_queue(channel, queue)
    return None


def candidates(names: Iterable[str]) -> list[str]:
    """The queues among ``names`` to migrate, including those a holding queue names."""
    found = {name.removesuffix(HOLDING_SUFFIX) for name in names}
    return sorted(name for name in found if target(name) is not None)


async def migrate(connection: WireConnection, queue: str) -> int | None:
    """Make ``queue`` what this taskgate declares; the messages it holds after the move,
    or None if it already was. LookupError if there is no such queue."""
    declare = target(queue)
    if declare is None:
        raise ValueError(f"{queue!r} is neither a retry tier nor a dead-letter queue")
    holding = queue + HOLDING_SUFFIX
    leftover = await _exists(connection, holding)  # from a move that was interrupted
    if not leftover and not await _exists(connection, queue):
        raise LookupError(f"no queue {queue!r}")
    up_to_date = await _declares(connection, declare)
    if up_to_date and not leftover:
        return None
    if not up_to_date:
        channel = await connection.raw_channel(publisher_confirms=True)
        try:
            await channel.queue_declare(holding, durable=True, arguments=dead_queue_arguments())
            await _move(channel, queue, lambda route: ("", holding), keep_route=True)
            # if_empty (the old queue is classic): a message that came in meanwhile fails
            # the step instead of vanishing.
            await channel.queue_delete(queue, if_empty=True)
        finally:
            await channel.close()
    # A new channel: RabbitMQ 3.10's channel process remembers the old queue's type and
    # crashes (541) on a publish to the new queue of the same name.
    channel = await connection.raw_channel(publisher_confirms=True)
    try:
        await declare(channel)
        tier = queue if tier_delay_ms(queue) is not None else None
        # A retry goes back through its tier's exchange, under its kind.
        moved = await _move(
            channel, holding, lambda route: (tier, route) if tier else ("", queue), keep_route=False
        )
        # Only this command publishes to the holding queue, and quorum queues know no if_empty.
        await channel.queue_delete(holding)
        return moved
    finally:
        await channel.close()


async def _move(
    channel: Channel,
    source: str,
    address: Callable[[str], tuple[str, str]],
    *,
    keep_route: bool,
) -> int:
    """Move every message of ``source`` to ``address(route)`` (exchange, routing key).

    ``route`` is the message's routing key, or the one kept in ROUTE_HEADER.
    """
    moved = 0
    while (message := await channel.basic_get(source)) is not None:
        headers = dict(message.properties.headers or {})
        kept = headers.pop(ROUTE_HEADER, None)
        route = kept.decode() if isinstance(kept, bytes) else kept or message.routing_key
        if keep_route:
            headers[ROUTE_HEADER] = route
        properties = message.properties.copy()
        properties.headers = headers
        properties.delivery_mode = 2
        exchange, routing_key = address(route)
        await publish_confirmed(
            channel, message.body, exchange=exchange, routing_key=routing_key, properties=properties
        )
        channel.basic_ack(message.delivery_tag)
        moved += 1
    if moved:
        # The acks are asynchronous; a round trip makes sure the broker has them.
        await channel.queue_declare(source, passive=True)
    return moved


async def _declares(connection: WireConnection, declare: Declare) -> bool:
    """True if the broker takes ``declare`` as it is; False if the queue there differs (406)."""
    channel = await connection.raw_channel()
    try:
        await declare(channel)
    except ChannelClosed as exc:
        if exc.code == PRECONDITION_FAILED:
            return False
        raise
    await channel.close()
    return True


async def _exists(connection: WireConnection, queue: str) -> bool:
    channel = await connection.raw_channel()
    try:
        await channel.queue_declare(queue, passive=True)
    except ChannelClosed as exc:
        if exc.code == NOT_FOUND:
            return False
        raise
    await channel.close()
    return True


def run(args: argparse.Namespace) -> int:
    cli_settings = settings.load()
    if args.queue:
        names = list(args.queue)
        unknown = [name for name in names if target(name) is None]
        if unknown:
            raise usage_error(f"not a retry tier or dead-letter queue: {', '.join(unknown)}")
    else:
        try:
            address = AmqpAddress.parse(cli_settings.amqp_url)
        except ValueError as exc:
            raise usage_error(f"AMQP_URL: {exc}") from None
        names = candidates(stats.name for stats in queues.collect(args, address))
    return asyncio.run(_run(cli_settings, names))


async def _run(cli_settings: settings.CliSettings, names: list[str]) -> int:
    try:
        connection = await connect_wire(
            cli_settings.amqp_url, name="taskgate migrate-queues", tls=tls_options(cli_settings)
        )
    except (BrokerUnavailable, Unavailable) as exc:
        raise CommandError(f"cannot reach the broker: {exc}") from None
    try:
        for name in names:
            try:
                moved = await migrate(connection, name)
            except LookupError as exc:
                raise CommandError(str(exc)) from None
            except (BrokerError, BrokerRefused, BrokerUnavailable, Unavailable) as exc:
                raise CommandError(f"{name}: {exc}; no message was lost, run again") from None
            if moved is None:
                print(f"{name}: up to date")
            else:
                print(f"{name}: now a quorum queue, with its {moved} message{_s(moved)}")
    finally:
        await connection.close()
    if not names:
        print(f"no retry tiers or dead-letter queues to migrate (e.g. {retry_tier(1000)})")
    return exits.OK


def _s(count: int) -> str:
    return "" if count == 1 else "s"
