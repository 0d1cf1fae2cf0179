"""``taskgate --help``: every command is listed, and the exit codes are documented."""

from __future__ import annotations

import asyncio

from .conftest import taskgate

COMMANDS = (
    "call",
    "upload",
    "watch",
    "tasks",
    "cancel",
    "retry",
    "dead",
    "queues",
    "migrate-queues",
    "token",
    "broker",
)


async def test_help_lists_every_command_and_the_exit_codes():
    result = await taskgate("--help")

    assert result.code == 0
    for command in COMMANDS:
        # A long name has its summary on the next line.
        assert f"\n    {command} " in result.stdout or f"\n    {command}\n" in result.stdout
    assert "exit codes:" in result.stdout


async def test_each_command_has_its_own_help():
    results = await asyncio.gather(*(taskgate(command, "--help") for command in COMMANDS))

    for command, result in zip(COMMANDS, results, strict=True):
        assert result.code == 0, result.stderr
        assert result.stdout.startswith(f"usage: taskgate {command}")
        assert "exit codes:" in result.stdout


async def test_no_command_is_bad_usage():
    result = await taskgate()

    assert result.code == 2
    assert "COMMAND" in result.stderr
