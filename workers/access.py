"""Broker users per process type, each allowed only what that process does (workers/roles.py).

Users are made once and kept: ``python -m workers.access setup [FILE]`` (run by
``scripts/broker start|restart``) creates each missing user on the node that
``scripts/broker`` runs and writes the AMQP URLs to FILE as
``TASKGATE_<ROLE>_AMQP_URL=...`` lines (the Procfile gives each process its own),
leaving a user whose password in FILE still logs in, and FILE, as they are: the
processes logged in with it would be refused at their next reconnect.
``python -m workers.access rotate [FILE] [--role ROLE]`` gives the users new
passwords and says which processes must be restarted.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from .roles import ROLES as ROLES
from .roles import Role as Role

# rabbitmqctl <args> -> its stdout; raises RuntimeError on a non-zero exit (BrokerNode.rabbitmqctl).
Rabbitmqctl = Callable[..., str]


def role_url(base_url: str, user: str, password: str) -> str:
    """``base_url`` with ``user:password`` in place of its credentials."""
    parts = urlsplit(base_url)
    host = parts.hostname or "127.0.0.1"
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))


def create_users(
    rabbitmqctl: Rabbitmqctl, base_url: str, roles: Iterable[Role] = ROLES
) -> dict[str, str]:
    """Create or re-key one user per role with a fresh password; role name -> AMQP URL.

    A re-keyed user's open connections stay open, but are refused at their next login.
    """
    existing = _users(rabbitmqctl)
    urls = {}
    for role in roles:
        # Hex: a password starting with "-" would be read as an option by rabbitmqctl.
        password = secrets.token_hex(24)
        if role.name in existing:
            rabbitmqctl("change_password", role.name, password)
        else:
            rabbitmqctl("add_user", role.name, password)
        _set_permissions(rabbitmqctl, role)
        urls[role.name] = role_url(base_url, role.name, password)
    return urls


def keep_users(
    rabbitmqctl: Rabbitmqctl, base_url: str, known: dict[str, str]
) -> tuple[dict[str, str], list[str]]:
    """Each role's URL, keeping the password in ``known`` (role -> URL) where it still logs in.

    Creates (or re-keys) only the users that are missing or whose password is not in
    ``known``; sets permissions that differ from the role's. Returns the URLs and the
    names of the roles that got a new password.
    """
    existing = _users(rabbitmqctl)
    permissions = _permissions(rabbitmqctl)
    urls: dict[str, str] = {}
    renewed = []
    for role in ROLES:
        password = _password(known.get(role.name))
        if role.name in existing and password and _logs_in(rabbitmqctl, role.name, password):
            if permissions.get(role.name) != (role.configure, role.write, role.read):
                _set_permissions(rabbitmqctl, role)
            urls[role.name] = role_url(base_url, role.name, password)
        else:
            urls.update(create_users(rabbitmqctl, base_url, [role]))
            renewed.append(role.name)
    return urls, renewed


def env_lines(urls: dict[str, str]) -> str:
    return "".join(f"TASKGATE_{name.upper()}_AMQP_URL={url}\n" for name, url in urls.items())


def read_env_file(path: Path) -> dict[str, str]:
    """Role name -> AMQP URL from a file that :func:`write_env_file` wrote ({} if none)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    urls = {}
    for line in text.splitlines():
        key, _, url = line.partition("=")
        if key.startswith("TASKGATE_") and key.endswith("_AMQP_URL"):
            urls[key.removeprefix("TASKGATE_").removesuffix("_AMQP_URL").lower()] = url.strip()
    return urls


def write_env_file(path: Path, urls: dict[str, str]) -> bool:
    """Write ``urls`` to ``path`` unless it holds them already; True if it was written."""
    text = env_lines(urls)
    try:
        if path.read_text() == text:
            return False
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    # The file holds passwords: readable by its owner only. Replaced whole, so a
    # process reading it meanwhile sees the old URLs or the new ones.
    partial = path.with_name(f".{path.name}.new")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(partial, path)
    return True


def setup(
    rabbitmqctl: Rabbitmqctl,
    base_url: str,
    env_file: Path,
    spread: Callable[[str], str] = lambda url: url,
) -> str:
    """Make the missing users, keep the others; what was done, in a sentence.

    ``spread`` makes one node's URL into the one written (a cluster's names every node).
    """
    urls, renewed = keep_users(rabbitmqctl, base_url, read_env_file(env_file))
    written = write_env_file(env_file, {name: spread(url) for name, url in urls.items()})
    kept = [name for name in urls if name not in renewed]
    parts = []
    if renewed:
        parts.append(f"new passwords for {', '.join(renewed)}")
    if kept:
        parts.append(f"{', '.join(kept)} kept")
    where = "written to" if written else "unchanged in"
    return f"broker users: {'; '.join(parts)} ({where} {env_file})"


def rotate(
    rabbitmqctl: Rabbitmqctl,
    base_url: str,
    env_file: Path,
    roles: Iterable[Role] = ROLES,
    spread: Callable[[str], str] = lambda url: url,
) -> str:
    """New passwords for ``roles``; what must be restarted, in a few lines."""
    roles = list(roles)
    connections = _connections(rabbitmqctl)
    renewed = create_users(rabbitmqctl, base_url, roles)
    urls = {**read_env_file(env_file), **{name: spread(url) for name, url in renewed.items()}}
    write_env_file(env_file, {role.name: urls[role.name] for role in ROLES if role.name in urls})
    names = ", ".join(role.name for role in roles)
    plural = "s" if len(roles) > 1 else ""
    lines = [
        f"{names}: new broker password{plural}, written to {env_file}.",
        "Restart every process that logs in as them: it keeps its open connections, but is",
        "refused (ACCESS_REFUSED) at its next reconnect, and keeps retrying until restarted.",
    ]
    width = max(len(role.process) for role in roles)
    for role in roles:
        open_now = connections.get(role.name, 0)
        plural = "" if open_now == 1 else "s"
        lines.append(
            f"  {role.name:<7} {role.process:<{width}}  {open_now} connection{plural} open now"
        )
    lines.append("scripts/run reads the file when it starts: stop it (Ctrl-C) and run it again.")
    return "\n".join(lines)


def _users(rabbitmqctl: Rabbitmqctl) -> set[str]:
    return {
        line.split("\t")[0]
        for line in rabbitmqctl("list_users", "--quiet", "--no-table-headers").splitlines()
        if line
    }


def _permissions(rabbitmqctl: Rabbitmqctl) -> dict[str, tuple[str, ...]]:
    """User -> (configure, write, read) on the virtual host ``/``."""
    listed = rabbitmqctl("list_permissions", "-p", "/", "--quiet", "--no-table-headers")
    return {
        user: tuple(rest)
        for user, *rest in (line.split("\t") for line in listed.splitlines() if line)
    }


def _set_permissions(rabbitmqctl: Rabbitmqctl, role: Role) -> None:
    rabbitmqctl("set_permissions", "-p", "/", role.name, role.configure, role.write, role.read)


def _connections(rabbitmqctl: Rabbitmqctl) -> dict[str, int]:
    """User -> how many AMQP connections it has open now."""
    counts: dict[str, int] = {}
    for user in rabbitmqctl("list_connections", "user", "--quiet", "--no-table-headers").split():
        counts[user] = counts.get(user, 0) + 1
    return counts


def _logs_in(rabbitmqctl: Rabbitmqctl, user: str, password: str) -> bool:
    try:
        rabbitmqctl("authenticate_user", user, password)
    except RuntimeError as exc:
        # Only a refusal: any other failure (node down, timeout) must not re-key the user.
        if "failed to authenticate user" in str(exc):
            return False
        raise
    return True


def _password(url: str | None) -> str | None:
    password = urlsplit(url).password if url else None
    return unquote(password) if password else None


def main(argv: list[str] | None = None) -> int:
    from infra.node import BrokerNode, config_from_env

    parser = argparse.ArgumentParser(prog="python -m workers.access", description=__doc__)
    parser.add_argument("command", choices=["setup", "rotate"])
    parser.add_argument(
        "env_file",
        type=Path,
        nargs="?",
        help="where the users' AMQP URLs are kept (default: $TASKGATE_VAR/broker/users.env)",
    )
    parser.add_argument(
        "--role",
        action="append",
        choices=[role.name for role in ROLES],
        help="rotate: only this user (repeatable; default: all)",
    )
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="the users of scripts/cluster's nodes (default file: $TASKGATE_VAR/cluster/users.env"
        "), each URL naming all three",
    )
    args = parser.parse_args(argv)
    if args.cluster:
        from infra.cluster import cluster_from_env

        cluster = cluster_from_env()
        base_dir = cluster.nodes[0].config.base_dir.parent
        rabbitmqctl, base_url, spread = (
            cluster.rabbitmqctl,
            cluster.nodes[0].amqp_url,
            cluster.spread,
        )
    else:
        node = BrokerNode(config_from_env())
        base_dir = node.config.base_dir
        rabbitmqctl, base_url, spread = node.rabbitmqctl, node.amqp_url, lambda url: url
    env_file = args.env_file or base_dir / "users.env"
    try:
        if args.command == "setup":
            print(setup(rabbitmqctl, base_url, env_file, spread))
        else:
            chosen = [role for role in ROLES if not args.role or role.name in args.role]
            print(rotate(rabbitmqctl, base_url, env_file, chosen, spread))
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
