"""``taskgate call METHOD [JSON]``: one RPC call over AMQP, its result printed as JSON."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

import rpc
from rpc.connection import tls_options

from . import exits
from .commands import Subcommands, describe
from .errors import CommandError, usage_error
from .output import print_json
from .settings import CliSettings
from .settings import load as load_settings

# The ways a call can fail, each with a message fit for the user.
CALL_ERRORS = (
    rpc.RemoteError,
    rpc.RpcTimeout,
    rpc.RpcNoServer,
    rpc.BrokerUnavailable,
    rpc.BrokerRefused,
    rpc.RpcClosed,
)
EXAMPLE = """\
example:
  taskgate call orders.quote '{"lines": [{"sku": "MUG-01", "quantity": 2}]}'
"""


def add_parser(commands: Subcommands) -> None:
    parser = describe(
        commands,
        "call",
        "call an RPC method over AMQP and print its result",
        "Call an RPC method over the broker at $AMQP_URL and print its result as JSON.\n"
        "A failed call (the service's typed error, a timeout, no server) is reported\n"
        "on stderr.",
        EXAMPLE
        + "\n"
        + exits.describe_codes(
            ok="the result was printed",
            failure="the call failed: the service's error, a timeout, no server, no broker",
            usage="bad arguments, or JSON that does not parse",
        ),
    )
    parser.add_argument("method", metavar="METHOD", help="the method's name, e.g. orders.quote")
    parser.add_argument(
        "params",
        metavar="JSON",
        nargs="?",
        default="{}",
        help="the parameters: a JSON object, or - to read it from stdin (default: {})",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="give up after this long (default: $RPC_TIMEOUT_S, else 10)",
    )
    parser.set_defaults(run=run)


def parse_params(text: str) -> dict[str, Any]:
    """The call's parameters: ``text`` (stdin for ``-``) must hold a JSON object."""
    if text == "-":
        text = sys.stdin.read()
    try:
        params = json.loads(text)
    except json.JSONDecodeError as exc:
        raise usage_error(f"JSON does not parse: {exc}") from None
    if not isinstance(params, dict):
        raise usage_error("the parameters must be a JSON object, e.g. '{}'")
    return params


async def call(settings: CliSettings, method: str, params: dict[str, Any], timeout_s: float) -> Any:
    """The result of one call, over a connection of its own."""
    connection = await rpc.connect_wire(
        settings.amqp_url, name="taskgate-cli", tls=tls_options(settings)
    )
    try:
        async with await rpc.RpcClient.create(
            connection, reply_mode=settings.rpc_reply_mode, default_timeout_s=timeout_s
        ) as client:
            return await client.call(method, params)
    finally:
        await connection.close()


def run(args: argparse.Namespace) -> int:
    params = parse_params(args.params)
    settings = load_settings()
    timeout_s = settings.rpc_timeout_s if args.timeout is None else args.timeout
    if timeout_s <= 0:
        raise usage_error("--timeout must be positive")
    try:
        result = asyncio.run(call(settings, args.method, params, timeout_s))
    except CALL_ERRORS as exc:
        # A RemoteError reads "<type>: <message>", e.g. "UnknownSku: unknown SKU: NOPE".
        raise CommandError(f"{args.method}: {exc}") from None
    print_json(result)
    return exits.OK
