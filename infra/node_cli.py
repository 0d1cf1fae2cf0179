"""``python -m infra.node_cli start|stop|status|restart|url``: the private node from the shell.

``scripts/broker`` and ``taskgate broker`` run it. Stdlib only, like infra.node.
"""

from __future__ import annotations

import argparse
import logging
import sys

from .node import BrokerNode, config_from_env, ensure_installed
from .node_config import ADMIN_USER


def main(argv: list[str] | None = None) -> int:
    """``python -m infra.node_cli start|stop|status|restart|url``; config from TASKGATE_* env.

    ``url`` prints the administrator's AMQP URL (with its password), for
    ``export AMQP_URL="$(scripts/broker url)"``; the others print no password.
    """
    parser = argparse.ArgumentParser(
        prog="python -m infra.node_cli",
        description="Manage the private RabbitMQ node under $TASKGATE_VAR/broker.",
    )
    parser.add_argument("command", choices=["start", "stop", "status", "restart", "url"])
    parser.add_argument("--timeout-s", type=float, default=90, help="start/stop timeout")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    try:
        node = BrokerNode(config_from_env())
    except ValueError as exc:  # the message names the variable
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cfg = node.config
    try:
        if args.command == "status":
            running = node.is_running()
            print(f"{cfg.node_name}: {'running' if running else 'stopped'} ({cfg.amqp_endpoint})")
            return 0 if running else 3
        if args.command == "stop":
            node.stop(timeout_s=args.timeout_s)
            print(f"{cfg.node_name}: stopped")
            return 0
        if args.command == "url":
            print(cfg.amqp_url)
            return 0
        ensure_installed()
        if args.command == "restart":
            node.restart(timeout_s=args.timeout_s)
        else:
            node.start(timeout_s=args.timeout_s)
    except (RuntimeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(cfg.amqp_endpoint)
    if cfg.management_url is not None:
        print(f"management: {cfg.management_url}")
    print(
        f"administrator: {ADMIN_USER}, password in {cfg.admin_password_file}"
        " (the url command prints its AMQP URL)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
