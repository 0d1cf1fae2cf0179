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


class PublishNacked(WireError):
    """The broker refused a confirmed publish (a full queue with reject-publish, an error)."""
