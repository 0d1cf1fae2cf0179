"""Talking to the gateway over HTTP: where it is, who we are, and its errors as messages."""

from __future__ import annotations

import argparse
from urllib.parse import quote

import httpx

from . import settings
from .errors import CommandError

# Reads may wait long on an SSE stream: the gateway sends a heartbeat every SSE_PING_S
# (15 s by default), so a minute of silence means the connection is dead.
TIMEOUT = httpx.Timeout(connect=5.0, read=60.0, write=30.0, pool=5.0)


def gateway_options() -> argparse.ArgumentParser:
    """The options of every command that talks to the gateway (an argparse parent)."""
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument(
        "--url",
        help=f"the gateway (default: $TASKGATE_URL, else {settings.DEFAULT_GATEWAY_URL})",
    )
    options.add_argument(
        "--token",
        help="Bearer token (default: $TASKGATE_TOKEN; mint one with: taskgate token USER)",
    )
    return options


def gateway_url(args: argparse.Namespace) -> str:
    """``--url``, else TASKGATE_URL, else the default."""
    return str(args.url) if args.url else settings.load().gateway_url


def open_client(args: argparse.Namespace) -> httpx.Client:
    """A client for the gateway that authenticates with the token when there is one."""
    token = args.token or settings.load().token
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=gateway_url(args), headers=headers, timeout=TIMEOUT)


def absolute_url(args: argparse.Namespace, path: str) -> str:
    """``path`` (as the gateway writes it, from its root) on the gateway of ``args``."""
    return gateway_url(args).rstrip("/") + path


def task_path(task_id: str, suffix: str = "") -> str:
    return f"/tasks/{quote(task_id, safe='')}{suffix}"


def error_message(response: httpx.Response) -> str:
    """What went wrong, from the gateway's ``{"error": {"message": ...}}`` when it sent one."""
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = response.text.strip()[:200] or response.reason_phrase
    hint = ""
    if response.status_code == 401:
        hint = " (set TASKGATE_TOKEN or --token; taskgate token USER mints one)"
    return f"{message}{hint} (HTTP {response.status_code})"


def check(response: httpx.Response) -> httpx.Response:
    """``response`` if it is a success, else CommandError with the gateway's message."""
    if response.is_success:
        return response
    response.read()
    raise CommandError(error_message(response))


def unreachable(args: argparse.Namespace, exc: httpx.TransportError) -> CommandError:
    return CommandError(f"cannot reach the gateway at {gateway_url(args)}: {exc}")
