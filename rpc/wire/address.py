"""Broker addresses: ``AMQP_URL`` read once, as one or several comma-separated AMQP URLs.

Follows RabbitMQ's URI spec (https://www.rabbitmq.com/docs/uri-spec and uri-query-parameters):
an empty path is the default vhost ``/``, ``%2F`` in the path is a literal slash, and
``connection_timeout`` is in milliseconds. A query parameter this client does not honour is
refused rather than silently ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qsl, unquote, urlsplit

AMQP_PORT = 5672
AMQPS_PORT = 5671
AUTH_MECHANISMS = ("PLAIN", "EXTERNAL")
FRAME_MIN_SIZE = 4096  # AMQP 0-9-1: no peer may ask for smaller frames


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """One broker node and how to log in to it."""

    scheme: Literal["amqp", "amqps"] = "amqp"
    host: str = "localhost"
    port: int = AMQP_PORT
    username: str = "guest"
    password: str = "guest"
    vhost: str = "/"
    heartbeat_s: int | None = None  # None: take the broker's proposal
    connection_timeout_ms: int | None = None  # None: the caller's timeout
    channel_max: int | None = None  # upper bounds on the Tune negotiation
    frame_max: int | None = None
    auth_mechanism: str = "PLAIN"

    @property
    def url_host(self) -> str:
        """The host as it goes into a URL (an IPv6 address in brackets)."""
        return f"[{self.host}]" if ":" in self.host else self.host

    @property
    def user_id(self) -> str | None:
        """The ``user_id`` this connection's messages carry (RabbitMQ refuses any but the
        logged-in user's): the login's, or under EXTERNAL the URL's user part (the name the
        broker takes from the certificate), if the URL has one."""
        return self.username or None

    def __str__(self) -> str:
        # No credentials: this goes into logs.
        return f"{self.scheme}://{self.url_host}:{self.port}"


def _non_negative_int(name: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise ValueError(f"AMQP URL parameter {name} must be a non-negative integer, not {text!r}")
    return value


def parse_address(url: str) -> BrokerAddress:
    """Read one ``amqp[s]://user:password@host:port/vhost?heartbeat=30`` URL."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in ("amqp", "amqps"):
        raise ValueError(f"not an AMQP URL (amqp:// or amqps://): {parts.scheme}://...")
    options: dict[str, object] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name == "heartbeat":
            options["heartbeat_s"] = _non_negative_int(name, value)
        elif name == "connection_timeout":
            options["connection_timeout_ms"] = _non_negative_int(name, value)
        elif name == "channel_max":
            options[name] = _non_negative_int(name, value)
        elif name == "frame_max":
            options[name] = _non_negative_int(name, value)
            if 0 < options[name] < FRAME_MIN_SIZE:  # type: ignore[operator]
                raise ValueError(
                    f"AMQP URL parameter frame_max must be 0 or at least {FRAME_MIN_SIZE}, "
                    f"not {value!r}"
                )
        elif name == "auth_mechanism":
            if value.upper() not in AUTH_MECHANISMS:
                raise ValueError(
                    f"AMQP URL parameter auth_mechanism must be one of {AUTH_MECHANISMS}, "
                    f"not {value!r}"
                )
            options["auth_mechanism"] = value.upper()
        else:
            raise ValueError(f"AMQP URL parameter {name!r} is not supported by this client")
    external = options.get("auth_mechanism") == "EXTERNAL"
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"bad port in AMQP URL: {exc}") from None
    return BrokerAddress(
        scheme="amqps" if scheme == "amqps" else "amqp",
        host=parts.hostname or "localhost",
        port=port or (AMQPS_PORT if scheme == "amqps" else AMQP_PORT),
        # EXTERNAL logs in by certificate: a user part only names it (see user_id).
        username=unquote(parts.username or ("" if external else "guest")),
        password=unquote(parts.password or "guest"),
        vhost=unquote(parts.path[1:]) or "/",
        **options,  # type: ignore[arg-type]
    )


def parse_addresses(urls: str) -> list[BrokerAddress]:
    """Read ``AMQP_URL``: one URL, or several separated by commas (one per cluster node)."""
    addresses = [parse_address(url) for url in urls.split(",") if url.strip()]
    if not addresses:
        raise ValueError("no AMQP URL given")
    return addresses
