"""``python -m infra.postgres_cli start|stop|status|restart|url``: what ``scripts/postgres`` runs.

The private development server lives in ``$TASKGATE_VAR/postgres`` and listens on
``TASKGATE_POSTGRES_PORT``. Stdlib only, so it can run before the project's
dependencies are installed.
"""

from __future__ import annotations

import argparse
import logging
import sys

from .postgres_config import PostgresConfig, ensure_installed
from .postgres_node import PostgresNode


def config_from_env() -> PostgresConfig:
    """The development server's config: ``$TASKGATE_VAR/postgres``, ``TASKGATE_POSTGRES_PORT``."""
    from .settings import NodeSettings

    settings = NodeSettings.from_env()
    return PostgresConfig(base_dir=settings.var_dir / "postgres", port=settings.postgres_port)


def main(argv: list[str] | None = None) -> int:
    """Manage the development server; start, restart and url print its URL."""
    parser = argparse.ArgumentParser(
        prog="python -m infra.postgres_cli",
        description="Manage the private PostgreSQL server under $TASKGATE_VAR/postgres.",
    )
    parser.add_argument("command", choices=["start", "stop", "status", "restart", "url"])
    parser.add_argument("--timeout-s", type=float, default=60, help="start/stop timeout")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        ensure_installed()
        node = PostgresNode(config_from_env())
        if args.command == "status":
            running = node.is_running()
            print(f"PostgreSQL in {node.config.data_dir}: {'running' if running else 'stopped'}")
            return 0 if running else 3
        if args.command == "stop":
            node.stop(timeout_s=args.timeout_s)
            return 0
        if args.command == "restart":
            node.restart(timeout_s=args.timeout_s)
        elif args.command == "start":
            node.start(timeout_s=args.timeout_s)
        elif not node.config.password_file.exists():
            print("error: no server yet: scripts/postgres start", file=sys.stderr)
            return 1
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(node.url())  # DATABASE_URL for the processes
    return 0


if __name__ == "__main__":
    sys.exit(main())
