"""What every command module provides: ``add_parser(commands)``, which registers the
command's arguments and sets ``run`` (``Namespace -> exit code``) as its default."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TypeAlias

# argparse's (private) type for the object ``add_subparsers`` returns.
Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def describe(
    commands: Subcommands,
    name: str,
    summary: str,
    description: str,
    epilog: str,
    parents: Sequence[argparse.ArgumentParser] = (),
) -> argparse.ArgumentParser:
    """A subcommand whose help keeps the line breaks of ``description`` and ``epilog``."""
    return commands.add_parser(
        name,
        help=summary,
        description=description,
        epilog=epilog,
        parents=list(parents),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
