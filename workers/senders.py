"""Who may send what: a consumer trusts a message only from the broker users that may send it.

RabbitMQ refuses a publish whose ``user_id`` property is not the publishing
connection's user, and every message our wire client publishes carries it
(rpc/wire/publishing.py). So ``user_id`` names the sender, and a consumer
refuses (dead-letters, with this module's reason) a message without it or from
anyone else: a user that may still write into a queue through the default
exchange (the rpc user answering other languages' reply queues, any RPC client
with a broker user of its own) cannot pass for a worker or the gateway.

Each process type logs in as the user named after its role (workers/access.py
makes them). A process that logs in as none of them (one user for everything:
a development broker, or a test's) trusts that user too, since everything it
meets was sent by it.
"""

from __future__ import annotations

from collections.abc import Iterable

from rpc.wire import Properties

from .errors import UntrustedSender
from .roles import ROLES

ROLE_USERS = frozenset(role.name for role in ROLES)
WEB = "web"
WORKER = "worker"


class Senders:
    """The broker users a consumer takes messages from."""

    __slots__ = ("_expected", "users")

    def __init__(self, roles: Iterable[str], own_user: str | None) -> None:
        users = set(roles)
        if own_user is not None and own_user not in ROLE_USERS:
            users.add(own_user)
        self.users = frozenset(users)
        self._expected = " or ".join(repr(user) for user in sorted(users))

    def refusal(self, properties: Properties) -> str | None:
        """Why a message with ``properties`` is not to be trusted, or None if it is."""
        sender = properties.user_id
        if sender in self.users:
            return None
        if sender is None:
            return f"untrusted sender: no user_id (only {self._expected} may send this)"
        return f"untrusted sender: user_id {sender[:100]!r} (only {self._expected} may send this)"

    def check(self, properties: Properties) -> None:
        """UntrustedSender with the reason, unless a message with ``properties`` is trusted."""
        refused = self.refusal(properties)
        if refused is not None:
            raise UntrustedSender(refused)

    def __repr__(self) -> str:
        return f"Senders({sorted(self.users)})"


def task_senders(own_user: str | None) -> Senders:
    """Of task messages: the gateway submits them, workers send their retries."""
    return Senders((WEB, WORKER), own_user)


def status_senders(own_user: str | None) -> Senders:
    """Of status events on the journal: workers (and the order consumers, which run in them)."""
    return Senders((WORKER,), own_user)


def gateway_senders(own_user: str | None) -> Senders:
    """Of what only the gateway publishes: orders, recorded events, notifications."""
    return Senders((WEB,), own_user)
