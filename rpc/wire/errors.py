"""What the wire raises. All are ConnectionErrors, so callers treat them as a lost broker."""

from __future__ import annotations


class WireError(ConnectionError):
    """The broker connection or a channel on it is unusable."""


class ConnectionLost(WireError):
    """The TCP connection closed, or the broker closed the AMQP connection."""


class ChannelClosed(WireError):
    """The broker closed the channel (a failed declaration, a refused permission, ...)."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"channel closed by the broker: {code} {text}")
        self.code = code
        self.text = text


class ChannelOutOfStep(WireError):
    """A call went without its reply (cancelled, timed out) or got another: the channel was closed.

    Its owner opens a new one (a robust channel does so by itself); the call that
    found the channel out of step, and every later call on it, get this error.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(f"channel out of step with the broker, closed: {reason}")
        self.reason = reason


class PublishNacked(WireError):
    """The broker refused a confirmed publish (a full queue with reject-publish, an error)."""


class PublishBlocked(WireError):
    """The broker blocked publishers (connection.blocked) for longer than a publish could wait."""

    def __init__(self, reason: str, waited_s: float | None = None) -> None:
        waited = f" (waited {waited_s:g} s)" if waited_s is not None else ""
        super().__init__(f"the broker blocks publishers: {reason}{waited}")
        self.reason = reason


class ConsumerCancelled(WireError):
    """The broker cancelled a consumer (its queue was deleted): the channel was closed.

    Its owner opens a new one and consumes again (a robust channel's set-up does).
    """

    def __init__(self, consumer_tag: str) -> None:
        super().__init__(f"the broker cancelled consumer {consumer_tag!r}; channel closed")
        self.consumer_tag = consumer_tag
