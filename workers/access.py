"""Broker users per process type, each allowed only what that process does.

RabbitMQ checks three regular expressions per user and virtual host:
*configure* (declare or delete a queue or exchange), *write* (publish to an
exchange; bind a queue, on the queue's side; declare a queue that dead-letters
to an exchange) and *read* (consume a queue; bind, on the exchange's side).
The default exchange is ``amq.default``; server-named queues are ``amq.gen-*``.

``python -m workers.access setup FILE`` creates (or re-keys) the users on the
node that ``scripts/broker`` runs and writes their AMQP URLs to FILE as
``TASKGATE_<ROLE>_AMQP_URL=...`` lines; the Procfile gives each process its own.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit


@dataclass(frozen=True, slots=True)
class Role:
    name: str
    configure: str
    write: str
    read: str


ROLES = (
    # The gateway: publishes tasks, orders and notifications, records status events,
    # calls RPC methods. It never publishes a status event or serves a method.
    Role(
        "web",
        configure=r"^(amq\.gen-.*|status(\..*)?|tasks(\..*)?|orders(\..*)?|notifications)$",
        write=r"^(amq\.default|amq\.gen-.*|status\.journal|tasks(\..*)?|orders(\..*)?"
        r"|notifications)$",
        read=r"^(amq\.gen-.*|status(\..*)?|tasks(\..*)?|orders(\..*)?|notifications)$",
    ),
    # Workers: consume their task and order queues, publish status events, retries and
    # dead letters. They may bind their queues to ``orders`` (read) but never publish to it.
    Role(
        "worker",
        configure=r"^(status(\..*)?|tasks(\..*)?|orders(\..*)?)$",
        write=r"^(amq\.default|status(\..*)?|tasks(\..*)?|orders\..+)$",
        read=r"^(status(\..*)?|tasks(\..*)?|orders(\..*)?)$",
    ),
    # RPC servers: consume their method queues, reply through the default exchange.
    Role(
        "rpc",
        configure=r"^rpc(\..*)?$",
        write=r"^(amq\.default|rpc(\..*)?)$",
        read=r"^rpc(\..*)?$",
    ),
)


def role_url(base_url: str, user: str, password: str) -> str:
    """``base_url`` with ``user:password`` in place of its credentials."""
    parts = urlsplit(base_url)
    host = parts.hostname or "127.0.0.1"
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))


def create_users(rabbitmqctl: Callable[..., str], base_url: str) -> dict[str, str]:
    """Create or re-key one user per role with a fresh password; role name -> AMQP URL."""
    existing = set(rabbitmqctl("list_users", "--quiet", "--no-table-headers").split())
    urls = {}
    for role in ROLES:
        # Hex: a password starting with "-" would be read as an option by rabbitmqctl.
        password = secrets.token_hex(24)
        if role.name in existing:
            rabbitmqctl("change_password", role.name, password)
        else:
            rabbitmqctl("add_user", role.name, password)
        rabbitmqctl("set_permissions", "-p", "/", role.name, role.configure, role.write, role.read)
        urls[role.name] = role_url(base_url, role.name, password)
    return urls


def env_lines(urls: dict[str, str]) -> str:
    return "".join(f"TASKGATE_{name.upper()}_AMQP_URL={url}\n" for name, url in urls.items())


def main(argv: list[str] | None = None) -> int:
    from infra.node import BrokerNode, config_from_env

    parser = argparse.ArgumentParser(prog="python -m workers.access", description=__doc__)
    parser.add_argument("command", choices=["setup"])
    parser.add_argument("env_file", type=Path, help="where to write the users' AMQP URLs")
    args = parser.parse_args(argv)
    node = BrokerNode(config_from_env())
    urls = create_users(node.rabbitmqctl, node.amqp_url)
    args.env_file.parent.mkdir(parents=True, exist_ok=True)
    # The file holds passwords: readable by its owner only.
    fd = os.open(args.env_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(env_lines(urls))
    print(f"broker users {', '.join(urls)} written to {args.env_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
