"""Broker names and declarations of the task runtime, in one place.

Retry tiers: one fanout exchange and one durable queue per delay, both named
``tasks.retry.<delay_ms>``. A retry copy is published to the tier exchange with
routing key = task kind; the fanout ignores the key but the message keeps it, so
when its TTL expires the tier queue dead-letters it to ``tasks`` under its
original routing key, straight back to ``tasks.<kind>``. One tier serves every
kind, and a message never waits behind one with a longer delay.

Every queue that keeps work is a quorum queue: task queues, retry tiers and dead
queues. A tier dead-letters *at least once*: the broker keeps an expired retry in
the tier until ``tasks.<kind>`` has confirmed it, so a retry coming back to a
full queue waits (the broker tries again every
``dead_letter_worker_publisher_confirm_timeout``) instead of being dropped.
Queues declared by an older taskgate as classic are moved over by
``taskgate migrate-queues`` (the broker cannot change a queue's type).

Priorities: each kind has a queue per level, ``tasks.<kind>`` (normal) and
``tasks.<kind>.high``, bound to ``tasks`` with routing keys ``<kind>`` and
``<kind>.high``. Quorum queues order by priority only from RabbitMQ 4.0, and
even there a worker whose prefetch is full of normal work would not see high
work; with a queue per level each has its own consumer and prefetch, so high
work reaches a busy worker at once, and the worker starts it first
(``workers/slots.py``). Both levels dead-letter to ``tasks.<kind>.dead``.
"""

from __future__ import annotations

from typing import Any, Literal

# Dead letters of every kind carry the same headers: rpc.dead_letter writes them.
from rpc.topology import DIED_AT_HEADER as DIED_AT_HEADER
from rpc.topology import QUEUE_HEADER as QUEUE_HEADER
from rpc.topology import REASON_HEADER as REASON_HEADER
from rpc.topology import SENDER_HEADER as SENDER_HEADER
from rpc.topology import TRACEBACK_HEADER as TRACEBACK_HEADER
from rpc.wire import Channel

TASKS_EXCHANGE = "tasks"
STATUS_EXCHANGE = "status"
# Internal (no client publishes to it) consistent-hash exchange bound to STATUS_EXCHANGE with
# "#": it spreads events over the journal shards by STATUS_HASH_PROPERTY, the task id.
STATUS_SHARDS_EXCHANGE = "status.shards"
STATUS_HASH_PROPERTY = "correlation_id"
# Each shard's weight on the hash ring: with 1 point per shard, 4 shards got 0-60 % each
# of 1,000 tasks; with 100, 23-26 %.
STATUS_SHARD_WEIGHT = "100"
DEFAULT_STATUS_SHARDS = 4
# Recorded events, each with its sequence number, to every gateway's live queue.
STATUS_RECORDED_EXCHANGE = "status.recorded"
# Status events that could not be recorded, with the reason in REASON_HEADER.
STATUS_DEAD_QUEUE = "status.dead"

ATTEMPT_HEADER = "x-taskgate-attempt"
REPLAYED_HEADER = "x-taskgate-replayed"

# Bindings on ``status`` for a process that only awaits outcomes (a third of the traffic).
TERMINAL_BINDING_KEYS = ("#.succeeded", "#.failed", "#.dead", "#.cancelled")

# Broker-side redeliveries of one message before its queue dead-letters it.
DELIVERY_LIMIT = 20
# Ready messages a task queue holds before the broker nacks new ones (overflow=reject-publish),
# so a flood turns into 503s at the gateway instead of an unbounded backlog. A retry coming
# back from a tier to a full queue is refused too, and waits in its tier (at-least-once).
DEFAULT_QUEUE_MAX_LENGTH = 100_000
# Dead letters wait for a person, who may list them many times: each look gets them and
# hands them back, which the broker may count as a delivery. RabbitMQ 4.0 gives a quorum
# queue a delivery limit of 20 unless told otherwise, and a dead queue has nowhere to send
# what passes it. 3.10 refuses -1 (4.0's "unlimited"), so: a limit no one reaches.
DEAD_DELIVERY_LIMIT = 2**31 - 1
RETRY_TIER_PREFIX = "tasks.retry."

CONTENT_TYPE = "application/json"
TASK_MESSAGE_TYPE = "task"
STATUS_MESSAGE_TYPE = "status"


Priority = Literal["high", "normal"]
# Highest first: the order in which a worker prefers them.
PRIORITIES: tuple[Priority, ...] = ("high", "normal")
HIGH_SUFFIX = ".high"


def task_queue(kind: str, priority: Priority = "normal") -> str:
    """The queue workers of ``kind`` consume for work of ``priority``."""
    return f"tasks.{task_routing_key(kind, priority)}"


def task_routing_key(kind: str, priority: Priority = "normal") -> str:
    """The routing key on ``tasks`` of work of ``kind`` at ``priority``."""
    return kind if priority == "normal" else f"{kind}{HIGH_SUFFIX}"


def task_kind(routing_key: str) -> str:
    """The kind a routing key on ``tasks`` names, at whatever priority."""
    return routing_key.removesuffix(HIGH_SUFFIX)


def dead_queue(kind: str) -> str:
    """Where messages of ``kind`` go when they cannot or may no longer be processed."""
    return f"{task_queue(kind)}.dead"


def retry_tier(delay_ms: int) -> str:
    """Name of the exchange and of the queue that hold retries for ``delay_ms``."""
    return f"{RETRY_TIER_PREFIX}{delay_ms}"


def tier_delay_ms(queue: str) -> int | None:
    """The delay of the retry tier named ``queue``; None if it names none."""
    digits = queue.removeprefix(RETRY_TIER_PREFIX)
    if digits == queue or not digits.isdigit():
        return None
    return int(digits)


def status_routing_key(kind: str, task_id: str, state: str) -> str:
    return f"{kind}.{task_id}.{state}"


def status_journal(shard: int) -> str:
    """The journal queue of one shard of task ids."""
    return f"status.journal.{shard}"


def recorded_routing_key(task_id: str, seq: int, state: str) -> str:
    """A recorded event's routing key on STATUS_RECORDED_EXCHANGE: all a hub needs but the body."""
    return f"{task_id}.{seq}.{state}"


async def declare_status_exchange(channel: Channel) -> None:
    """Only the ``status`` exchange: for a process that listens to status events and
    publishes none (the journal shards are declared by those that do, with STATUS_SHARDS)."""
    await channel.exchange_declare(STATUS_EXCHANGE, exchange_type="topic", durable=True)


async def declare_status(channel: Channel, shards: int = DEFAULT_STATUS_SHARDS) -> None:
    """The status exchange and the journal shards that keep events while no recorder runs.

    Every process that publishes or records status events declares this, with the
    same ``shards``. A task's events all hash to one shard, and each shard has a
    single active consumer: its recorder sees them in publish order. Quorum
    queues: a shard's events survive the loss of a broker node.
    """
    await channel.exchange_declare(STATUS_EXCHANGE, exchange_type="topic", durable=True)
    await channel.exchange_declare(
        STATUS_SHARDS_EXCHANGE,
        exchange_type="x-consistent-hash",
        durable=True,
        internal=True,
        arguments={"hash-property": STATUS_HASH_PROPERTY},
    )
    await channel.exchange_bind(STATUS_SHARDS_EXCHANGE, STATUS_EXCHANGE, routing_key="#")
    await declare_dead_queue(channel, STATUS_DEAD_QUEUE)
    for shard in range(shards):
        journal = status_journal(shard)
        await channel.queue_declare(
            journal,
            durable=True,
            arguments={
                "x-queue-type": "quorum",
                "x-single-active-consumer": True,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": STATUS_DEAD_QUEUE,
            },
        )
        await channel.queue_bind(journal, STATUS_SHARDS_EXCHANGE, routing_key=STATUS_SHARD_WEIGHT)


async def declare_recorded(channel: Channel) -> None:
    """The fanout of recorded events (see recorded_routing_key)."""
    await channel.exchange_declare(STATUS_RECORDED_EXCHANGE, exchange_type="fanout", durable=True)


async def declare_kind(
    channel: Channel,
    kind: str,
    *,
    max_length: int = DEFAULT_QUEUE_MAX_LENGTH,
) -> None:
    """The ``tasks`` exchange, the kind's work queue per priority and its dead-letter queue.

    Every process must declare a kind with the same ``max_length`` (it bounds
    each level): the broker refuses a redeclaration with different arguments,
    and changing them needs the queue deleted first.
    """
    await channel.exchange_declare(TASKS_EXCHANGE, exchange_type="direct", durable=True)
    for priority in PRIORITIES:
        queue = task_queue(kind, priority)
        await declare_work_queue(
            channel,
            queue,
            {"x-max-length": max_length, "x-overflow": "reject-publish"},
            dead=dead_queue(kind),
        )
        await channel.queue_bind(
            queue, TASKS_EXCHANGE, routing_key=task_routing_key(kind, priority)
        )


async def declare_work_queue(
    channel: Channel,
    queue: str,
    arguments: dict[str, Any] | None = None,
    *,
    dead: str | None = None,
) -> None:
    """A durable quorum queue that dead-letters to ``dead`` (default ``<queue>.dead``; declared
    too).

    ``arguments`` add to the shared ones; every process must pass the same.
    """
    dead = dead or f"{queue}.dead"
    await declare_dead_queue(channel, dead)
    await channel.queue_declare(
        queue,
        durable=True,
        arguments={
            "x-queue-type": "quorum",
            # A message that keeps killing its consumer (a crash in a C library) would be
            # redelivered forever; after this many deliveries the broker buries it.
            "x-delivery-limit": DELIVERY_LIMIT,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": dead,
            **(arguments or {}),
        },
    )


async def declare_event_queue(
    channel: Channel,
    queue: str,
    *,
    exchange: str,
    routing_key: str,
    exchange_type: str = "topic",
) -> None:
    """An event consumer's queue, as its consumers declare it; publishers declare it too,
    so no event is published before the queue that keeps it exists."""
    await channel.exchange_declare(exchange, exchange_type=exchange_type, durable=True)
    await declare_work_queue(channel, queue)
    await channel.queue_bind(queue, exchange, routing_key=routing_key)


async def declare_dead_queue(channel: Channel, queue: str) -> None:
    """A quorum queue that keeps dead letters until someone replays or drops them."""
    await channel.queue_declare(queue, durable=True, arguments=dead_queue_arguments())


def dead_queue_arguments() -> dict[str, Any]:
    return {"x-queue-type": "quorum", "x-delivery-limit": DEAD_DELIVERY_LIMIT}


async def declare_retry_tiers(channel: Channel, delays_ms: tuple[int, ...]) -> None:
    """One fanout exchange + TTL queue per delay, dead-lettering back to ``tasks``."""
    for delay_ms in delays_ms:
        await declare_retry_tier(channel, delay_ms)


async def declare_retry_tier(channel: Channel, delay_ms: int) -> None:
    """The tier of ``delay_ms``: its fanout exchange and its quorum queue, bound."""
    name = retry_tier(delay_ms)
    await channel.exchange_declare(name, exchange_type="fanout", durable=True)
    await channel.queue_declare(name, durable=True, arguments=retry_tier_arguments(delay_ms))
    await channel.queue_bind(name, name)


def retry_tier_arguments(delay_ms: int) -> dict[str, Any]:
    return {
        "x-queue-type": "quorum",
        "x-message-ttl": delay_ms,
        "x-dead-letter-exchange": TASKS_EXCHANGE,
        # The broker keeps an expired retry until its task queue confirmed it; only a
        # quorum queue with overflow=reject-publish can (else it falls back to at-most-once).
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }
