"""The parts of an AMQP URL the CLI needs beyond connecting: host, port, user, vhost."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from rpc.wire.address import parse_addresses


@dataclass(frozen=True, slots=True)
class AmqpAddress:
    host: str
    port: int
    user: str
    password: str = ""
    vhost: str = "/"

    @classmethod
    def parse(cls, url: str) -> AmqpAddress:
        """Read ``$AMQP_URL`` with the client's parser (rpc/wire/address.py); of several
        comma-separated URLs, the first node is the one asked. A host is required."""
        first = url.split(",", 1)[0].strip()
        if not urlsplit(first).hostname:
            raise ValueError(f"not an AMQP URL: {first.split('@')[-1]!r} names no host")
        address = parse_addresses(url)[0]
        return cls(
            host=address.host,
            port=address.port,
            user=address.username,
            password=address.password,
            vhost=address.vhost,
        )

    @property
    def url_host(self) -> str:
        """The host as it goes into a URL (an IPv6 address in brackets)."""
        return f"[{self.host}]" if ":" in self.host else self.host
