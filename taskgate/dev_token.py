"""``taskgate token USER``: mint a development token signed with $SECRET_KEY.

Only the token is printed, so ``export TASKGATE_TOKEN=$(taskgate token ada)`` works.
The secret itself is never printed, not even in errors.
"""

from __future__ import annotations

import argparse

from gateway.tokens import mint

from . import exits, settings
from .commands import Subcommands, describe
from .errors import usage_error

DEFAULT_TTL_S = 24 * 3600


def add_parser(commands: Subcommands) -> None:
    parser = describe(
        commands,
        "token",
        "mint a development token for USER",
        "Mint a token for USER, signed with $SECRET_KEY (the gateway's key), and print\n"
        "only the token.",
        "example:\n  export TASKGATE_TOKEN=$(taskgate token ada)\n\n"
        + exits.describe_codes(
            ok="the token was printed",
            failure=None,
            usage="bad arguments, SECRET_KEY unset or too short",
        ),
    )
    parser.add_argument("user", metavar="USER", help="the user id the token names")
    parser.add_argument(
        "--ttl",
        type=float,
        default=DEFAULT_TTL_S,
        metavar="SECONDS",
        help=f"how long the token is valid (default: {DEFAULT_TTL_S} = 24 h)",
    )
    parser.add_argument(
        "--admin",
        action="store_true",
        help="an admin's token: it may send notifications to other users and to everyone",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    secret = settings.load().secret_key
    if not secret:
        raise usage_error("SECRET_KEY is not set: export the gateway's secret key first")
    if not args.user.strip():
        raise usage_error("USER must not be empty")
    if args.ttl <= 0:
        raise usage_error("--ttl must be positive")
    try:
        token = mint(secret, args.user, ttl_s=args.ttl, admin=args.admin)
    except ValueError as exc:  # too short a key; the message names the rule, not the key
        raise usage_error(str(exc)) from None
    print(token)
    return exits.OK
