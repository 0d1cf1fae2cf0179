"""The parts of an AMQP URL the CLI needs beyond connecting: host, port, user, vhost."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

AMQP_PORT = 5672
AMQPS_PORT = 5671


@dataclass(frozen=True, slots=True)
class AmqpAddress:
    host: str
    port: int
    user: str
    password: str = ""
    vhost: str = "/"

    @classmethod
    def parse(cls, url: str) -> AmqpAddress:
        """Read ``amqp[s]://user:password@host:port/vhost``; like aio-pika, an empty path
        is the default vhost ``/``, and ``%2F`` in the path is a literal slash."""
        parts = urlsplit(url)
        if parts.scheme not in ("amqp", "amqps") or not parts.hostname:
            raise ValueError(f"not an AMQP URL: {parts.scheme}://{parts.hostname or ''}...")
        default_port = AMQPS_PORT if parts.scheme == "amqps" else AMQP_PORT
        return cls(
            host=parts.hostname,
            port=parts.port or default_port,
            user=unquote(parts.username or "guest"),
            password=unquote(parts.password or "guest"),
            vhost=unquote(parts.path[1:]) or "/",
        )

    @property
    def url_host(self) -> str:
        """The host as it goes into a URL (an IPv6 address in brackets)."""
        return f"[{self.host}]" if ":" in self.host else self.host
