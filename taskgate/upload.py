"""``taskgate upload FILE``: send an image to the gateway (``POST /uploads``), optionally
following its task to the end (``--watch``)."""

from __future__ import annotations

import argparse
import mimetypes
from pathlib import Path
from typing import Any

import httpx

from . import exits
from .commands import Subcommands, describe
from .errors import CommandError, usage_error
from .gateway_client import absolute_url, check, gateway_options, open_client, unreachable
from .watch import add_watch_options, watch


def add_parser(commands: Subcommands) -> None:
    parser = describe(
        commands,
        "upload",
        "upload an image and print its task",
        "Upload an image (JPEG, PNG, WebP or GIF) to the gateway, which answers with\n"
        "the task that makes its thumbnails. Prints the task id and its URLs;\n"
        "--watch then follows the task like 'taskgate watch'.",
        exits.describe_codes(
            ok="the gateway took the file (with --watch: the task succeeded)",
            failure="the gateway refused the file or cannot be reached "
            "(with --watch: the task failed, went dead or was cancelled)",
            usage="bad arguments, or no such FILE",
        ),
        parents=[gateway_options()],
    )
    parser.add_argument("file", metavar="FILE", type=Path, help="the image to upload")
    parser.add_argument("--watch", action="store_true", help="follow the task until it ends")
    parser.add_argument("--watermark", help="text to stamp on the thumbnails")
    parser.add_argument("--quality", type=int, help="JPEG/WebP quality, 1-100")
    parser.add_argument("--sizes", metavar="PX,PX", help="thumbnail sizes, e.g. 800,256")
    parser.add_argument(
        "--priority",
        choices=("high", "normal"),
        help="high overtakes the queued normal work (default: normal)",
    )
    when = parser.add_mutually_exclusive_group()
    when.add_argument(
        "--delay", type=float, metavar="SECONDS", help="run the task this many seconds from now"
    )
    when.add_argument(
        "--at", metavar="TIME", help="run the task at TIME: ISO 8601 with a zone, or Unix time"
    )
    add_watch_options(parser)
    parser.set_defaults(run=run)


def options(args: argparse.Namespace) -> dict[str, str]:
    """The form fields besides the file; only those given, so the gateway's defaults apply."""
    fields = {
        "watermark": args.watermark,
        "quality": args.quality,
        "sizes": args.sizes,
        "priority": args.priority,
        "delay_s": args.delay,
        "run_at": args.at,
    }
    return {name: str(value) for name, value in fields.items() if value is not None}


def post_file(client: httpx.Client, path: Path, fields: dict[str, str]) -> dict[str, Any]:
    """``POST /uploads``; the gateway's 202 answer. httpx streams the file from disk."""
    content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    with path.open("rb") as file:
        response = client.post(
            "/uploads", files={"file": (path.name, file, content_type)}, data=fields
        )
    return dict(check(response).json())


def run(args: argparse.Namespace) -> int:
    path: Path = args.file
    if not path.is_file():
        raise usage_error(f"{path}: no such file")
    with open_client(args) as client:
        try:
            accepted = post_file(client, path, options(args))
        except httpx.TransportError as exc:
            raise unreachable(args, exc) from None
        except OSError as exc:
            raise CommandError(f"{path}: {exc.strerror or exc}") from None
        task_id = accepted["task_id"]
        print(f"task    {task_id}")
        print(f"status  {absolute_url(args, accepted['status_url'])}")
        print(f"events  {absolute_url(args, accepted['events_url'])}", flush=True)
        if not args.watch:
            return exits.OK
        return watch(args, client, task_id)
