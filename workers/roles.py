"""The broker roles: what each process type's user may configure, write and read, and why.

RabbitMQ checks three regular expressions per user and virtual host:
*configure* (declare or delete a queue or exchange), *write* (publish to an
exchange; bind a queue, on the queue's side; declare a queue that dead-letters
to an exchange) and *read* (consume a queue; bind, on the exchange's side;
declare a queue that dead-letters). The default exchange is ``amq.default``;
server-named queues are ``amq.gen-*``. docs/security.md has the table.
"""

from __future__ import annotations

from dataclasses import dataclass

from .shop.contracts import SERVICES


@dataclass(frozen=True, slots=True)
class Role:
    name: str
    configure: str
    write: str
    read: str
    # The process that logs in as this user (its Procfile command).
    process: str = ""


def _any_of(*names: str) -> str:
    """A permission regex matching exactly ``names`` (each itself a regex)."""
    return f"^({'|'.join(names)})$"


# Names in permission regexes (each is matched whole, as an exchange's or a queue's name).
_REPLY_QUEUES = r"amq\.gen-.*"  # server-named: live feeds, notifications, RPC reply queues
_JOURNALS = r"status\.journal\.\d+"
_KINDS = r"tasks\.(?!retry\.).+"  # tasks.<kind> and tasks.<kind>.dead, not the retry tiers
_ORDER_QUEUES = rf"orders\.({'|'.join(SERVICES)})"
_ORDER_DEAD_QUEUES = rf"{_ORDER_QUEUES}\.dead"

ROLES = (
    # The gateway: publishes tasks, orders and notifications, records status events (it
    # consumes the journal shards) and fans them out (status.recorded), calls RPC methods.
    # It declares what it publishes to and what it consumes, so it may delete those (RabbitMQ
    # has no declare without delete). RabbitMQ also asks whoever declares a queue that
    # dead-letters for read on it and write on the dead-letter exchange (amq.default here):
    # so the gateway may read the task and order queues it declares, though it never does
    # (docs/security.md). It never publishes a status event (status.shards is internal:
    # binding to it is all it can do) and never touches the retry tiers. amq.default also
    # carries its RPC requests and the poison events it buries. It reads the dead queues
    # (tasks.<kind>.dead, status.dead, orders.<service>.dead) for the admin view: show,
    # discard, and replay a task, which the workers take from it as they take its uploads.
    Role(
        "web",
        configure=_any_of(
            _REPLY_QUEUES,
            r"status",
            r"status\.shards",
            r"status\.dead",
            _JOURNALS,
            r"status\.recorded",
            r"tasks",
            _KINDS,
            r"orders",
            _ORDER_QUEUES,
            _ORDER_DEAD_QUEUES,
            r"notifications",
        ),
        write=_any_of(
            r"amq\.default",
            _REPLY_QUEUES,
            r"status\.shards",
            _JOURNALS,
            r"status\.recorded",
            r"tasks",
            _KINDS,
            r"orders",
            _ORDER_QUEUES,
            r"notifications",
        ),
        read=_any_of(
            _REPLY_QUEUES,
            r"status",
            r"status\.shards",
            _JOURNALS,
            r"status\.recorded",
            r"tasks",
            _KINDS,  # tasks.<kind> (it declares them, see above) and their dead queues
            r"orders",
            _ORDER_QUEUES,  # likewise
            r"status\.dead",
            _ORDER_DEAD_QUEUES,
            r"notifications",
        ),
        process="python -m gateway",
    ),
    # Workers: consume their task and order queues, publish status events, retries and
    # dead letters. They may bind their queues to ``orders`` (read) but never publish to it,
    # nor to ``status.recorded`` (only a recorder numbers events). A worker declares the
    # journal shards (it may start before any gateway: its events must not be dropped), which
    # dead-letter, so RabbitMQ asks it for read on them, as it asks the gateway for read on
    # the task queues; it never consumes them, and the recorder takes events only from it.
    # The worker user also replays dead letters (``taskgate dead replay``): tasks it sends
    # are trusted (workers/senders.py), so it may read the dead queues.
    Role(
        "worker",
        configure=_any_of(
            r"status",
            r"status\.shards",
            r"status\.dead",
            _JOURNALS,
            r"tasks(\..+)?",
            r"orders",
            _ORDER_QUEUES,
            _ORDER_DEAD_QUEUES,
        ),
        write=_any_of(
            r"amq\.default",
            r"status",
            r"status\.shards",
            _JOURNALS,
            r"tasks(\..+)?",
            _ORDER_QUEUES,
        ),
        read=_any_of(
            r"status",
            r"status\.shards",
            _JOURNALS,  # declared with a dead-letter exchange, see above
            r"tasks(\..+)?",
            r"orders",
            _ORDER_QUEUES,
        ),
        process="python -m workers",
    ),
    # RPC servers: consume their method queues, reply through the default exchange (to
    # direct reply-to and to other languages' exclusive reply queues, tutorial 6), bury
    # requests they cannot answer in rpc.dead. Writing to amq.default lets them put a message
    # into any queue by name: every consumer that matters checks who sent it (user_id).
    Role(
        "rpc",
        configure=_any_of(r"rpc\..+"),
        write=_any_of(r"amq\.default", r"rpc\.dead"),
        read=_any_of(r"rpc\..+"),
        process="python -m rpc workers.services:server",
    ),
)
