"""What the wire raises, split like httpx's: the broker unreachable, or the broker saying no.

    WireError
    ├── Unavailable            try again later: nothing is wrong with the request
    │   ├── TransportError     no usable connection or channel under the call
    │   │   ├── ConnectError       could not connect: refused, unreachable, timed out
    │   │   ├── ConnectionLost     reset, heartbeat timeout, closed by us, or closed by the
    │   │   │                      broker shutting down (320 CONNECTION_FORCED)
    │   │   ├── ChannelLost        the channel went under the call: closed by us, or after
    │   │   │   │                  the broker cancelled its consumer; it is reopened
    │   │   │   └── ConsumerCancelled  the broker cancelled a consumer (its queue was deleted)
    │   │   └── ChannelOutOfStep   a call lost its reply: the channel was closed and is reopened
    │   ├── PublishNacked      the broker refused a confirmed publish (a full queue with
    │   │                      reject-publish): backpressure
    │   └── PublishBlocked     the broker blocked publishers (connection.blocked, an alarm)
    │                          for longer than the publish could wait: backpressure
    └── BrokerError            the broker refused the request itself, with a code and its text:
        │                      configuration or permission, retrying the same does not help
        ├── ChannelClosed      it closed the channel: 403 ACCESS_REFUSED, 404 NOT_FOUND,
        │                      405 RESOURCE_LOCKED, 406 PRECONDITION_FAILED, ...
        └── ConnectionClosed   it closed the connection: 403 (login refused), 530 NOT_ALLOWED
                               (no access to the vhost), 501/505 (a frame it could not take)

None is a ConnectionError or OSError: a broad ``except OSError`` must not take a
406 from a redeclaration for a lost broker. Only :class:`Unavailable` means
"unavailable" (a 503 at the gateway, a requeue in a worker).
"""

from __future__ import annotations

# AMQP reply codes: the broker's reply text starts with the name, e.g. "PRECONDITION_FAILED - ...".
CONNECTION_FORCED = 320
ACCESS_REFUSED = 403
NOT_FOUND = 404
RESOURCE_LOCKED = 405
PRECONDITION_FAILED = 406
NOT_ALLOWED = 530


class WireError(Exception):
    """Base class of everything the wire raises."""


class Unavailable(WireError):
    """The broker cannot take the call now; the same call may succeed later."""


class TransportError(Unavailable):
    """There is no usable connection or channel under the call."""


class ConnectError(TransportError):
    """Could not connect (refused, unreachable, timed out, the handshake did not finish)."""


class ConnectionLost(TransportError):
    """The connection ended: reset, no heartbeat, closed by us, or forced closed by the broker."""


class ChannelLost(TransportError):
    """The channel closed under the call for a reason other than the call (it is reopened)."""


class ChannelOutOfStep(TransportError):
    """A call went without its reply (cancelled, timed out) or got another: the channel was closed.

    Its owner opens a new one (a robust channel does so by itself); the call that
    found the channel out of step, and every later call on it, get this error.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(f"channel out of step with the broker, closed: {reason}")
        self.reason = reason


class PublishNacked(Unavailable):
    """The broker refused a confirmed publish (a full queue with reject-publish, an error)."""


class BrokerError(WireError):
    """The broker refused the request with ``code`` and its reply ``text``."""

    where = "broker"

    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"{self.where} closed by the broker: {code} {text}")
        self.code = code
        self.text = text


class ChannelClosed(BrokerError):
    """The broker closed the channel (a failed declaration, a refused permission, ...).

    ``method`` is the (class id, method id) the broker refused, (60, 40) for a publish.
    """

    where = "channel"

    def __init__(self, code: int, text: str, method: tuple[int, int] = (0, 0)) -> None:
        super().__init__(code, text)
        self.method = method


class ConnectionClosed(BrokerError):
    """The broker closed the connection (login refused, no access to the vhost, ...)."""

    where = "connection"


class PublishBlocked(Unavailable):
    """The broker blocked publishers (connection.blocked) for longer than a publish could wait."""

    def __init__(self, reason: str, waited_s: float | None = None) -> None:
        waited = f" (waited {waited_s:g} s)" if waited_s is not None else ""
        super().__init__(f"the broker blocks publishers: {reason}{waited}")
        self.reason = reason


class ConsumerCancelled(ChannelLost):
    """The broker cancelled a consumer (its queue was deleted): the channel was closed.

    Its owner opens a new one and consumes again (a robust channel's set-up does).
    """

    def __init__(self, consumer_tag: str) -> None:
        super().__init__(f"the broker cancelled consumer {consumer_tag!r}; channel closed")
        self.consumer_tag = consumer_tag
