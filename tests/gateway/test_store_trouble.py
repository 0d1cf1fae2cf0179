"""A store that cannot take writes: /readyz says so, uploads get a JSON 503 and leave nothing.

The store is made read-only for real (the immutable flag, which stops root too,
where a chmod does not) or write-locked by another process holding
``BEGIN IMMEDIATE``, while the gateway runs; both recover once the trouble ends.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import fcntl
import os
import sqlite3
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from gateway.settings import GatewaySettings

from .conftest import jpeg_bytes, upload, wait_ready

# linux/fs.h: the inode flags ioctls (what chattr uses) and the immutable flag.
FS_IOC_GETFLAGS = 0x80086601
FS_IOC_SETFLAGS = 0x40086602
FS_IMMUTABLE_FL = 0x00000010


@pytest.fixture
def settings(gateway_settings: GatewaySettings, tmp_path: Path) -> GatewaySettings:
    """The store alone in its directory (storage stays writable); short bounds; no cached
    readiness, so each /readyz checks again."""
    return replace(
        gateway_settings,
        database_path=tmp_path / "db" / "taskgate.db",
        store_write_timeout_s=0.5,
        ready_cache_s=0,
    )


def _set_immutable(path: Path, on: bool) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0))
    try:
        flags = array.array("i", [0])
        fcntl.ioctl(fd, FS_IOC_GETFLAGS, flags, True)
        flags[0] = flags[0] | FS_IMMUTABLE_FL if on else flags[0] & ~FS_IMMUTABLE_FL
        fcntl.ioctl(fd, FS_IOC_SETFLAGS, flags)
    finally:
        os.close(fd)


@contextlib.contextmanager
def read_only(database: Path) -> Iterator[None]:
    """The database, its write-ahead log and their directory immutable: no process may write.

    Not the ``-shm`` index: SQLite maps it into memory, and a write to a shared map of
    a file that became immutable kills the process with SIGBUS (found so, 2026-12-07),
    which no gateway code can answer.
    """
    paths = [database, database.with_name(f"{database.name}-wal"), database.parent]
    done: list[Path] = []
    try:
        for path in paths:
            try:
                _set_immutable(path, True)
            except OSError as exc:
                pytest.skip(f"cannot make the store read-only here (immutable flag: {exc})")
            done.append(path)
        yield
    finally:
        for path in reversed(done):
            _set_immutable(path, False)


HOLD_WRITE_LOCK = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.read()
conn.execute("ROLLBACK")
conn.close()
"""


@contextlib.asynccontextmanager
async def write_locked(database: Path) -> AsyncIterator[None]:
    """Another process holds the store's write lock until the block ends."""
    holder = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        HOLD_WRITE_LOCK,
        str(database),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert holder.stdin is not None and holder.stdout is not None
    try:
        assert await holder.stdout.readline() == b"locked\n"
        yield
    finally:
        holder.stdin.close()  # it rolls back and exits
        await holder.wait()


def stored_task_ids(settings: GatewaySettings) -> list[str]:
    with contextlib.closing(sqlite3.connect(settings.database_path)) as db:
        return [row[0] for row in db.execute("SELECT task_id FROM tasks")]


def storage_entries(settings: GatewaySettings) -> list[Path]:
    return sorted(settings.storage_dir.iterdir()) if settings.storage_dir.exists() else []


def assert_store_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "1"
    assert response.json()["error"]["code"] == "store_unavailable"


async def test_a_read_only_store_is_not_ready_and_uploads_get_a_json_503(gateway_app, settings):
    async with gateway_app(settings) as client:
        await wait_ready(client)
        with read_only(settings.database_path):
            ready = await client.get("/readyz")
            refused = await upload(client, jpeg_bytes())
            left_behind = storage_entries(settings)
        await wait_ready(client)
        accepted = await upload(client, jpeg_bytes())

    assert ready.status_code == 503
    assert ready.headers["retry-after"] == "1"
    assert ready.json()["store"] == "unavailable"
    assert ready.json()["broker"] == "connected"
    assert "store" in ready.json()["errors"]
    assert_store_unavailable(refused)
    assert left_behind == []
    assert accepted.status_code == 202, accepted.text
    assert stored_task_ids(settings) == [accepted.json()["task_id"]]


async def test_a_store_locked_by_another_process_is_not_ready_and_uploads_get_a_json_503(
    gateway_app, settings
):
    async with gateway_app(settings) as client:
        await wait_ready(client)
        async with write_locked(settings.database_path):
            ready = await client.get("/readyz")
            refused = await asyncio.gather(*(upload(client, jpeg_bytes()) for _ in range(3)))
            left_behind = storage_entries(settings)
        await wait_ready(client)
        accepted = await upload(client, jpeg_bytes())

    assert ready.status_code == 503
    assert ready.json()["store"] == "unavailable"
    assert "locked" in ready.json()["errors"]["store"]
    for response in refused:
        assert_store_unavailable(response)
    assert left_behind == []
    assert accepted.status_code == 202, accepted.text
    assert stored_task_ids(settings) == [accepted.json()["task_id"]]


async def test_an_order_while_the_store_is_write_locked_gets_a_json_503_and_no_order(
    gateway_app, settings, rpc_process
):
    order = {"email": "ada@example.com", "lines": [{"sku": "MUG-01", "quantity": 1}]}
    key = {"Idempotency-Key": "while-locked"}
    async with gateway_app(settings) as client:
        await wait_ready(client)
        async with write_locked(settings.database_path):
            refused = await client.post("/orders", json=order, headers=key)
        await wait_ready(client)
        accepted = await client.post("/orders", json=order, headers=key)

    # Before the order store's writes were bounded and translated: a plain-text 500.
    assert_store_unavailable(refused)
    assert accepted.status_code == 201, accepted.text


async def test_an_unexpected_store_error_is_a_json_500(gateway_process, settings):
    gateway = gateway_process(database_path=settings.database_path)
    await gateway.wait_ready()
    # The schema broken under the running gateway: no error the store knows to translate.
    with contextlib.closing(sqlite3.connect(settings.database_path)) as db:
        db.execute("DROP TABLE tasks")
        db.commit()
    async with gateway.client() as client:
        response = await client.get("/tasks/0123456789abcdef0123456789abcdef")

    assert response.status_code == 500
    assert response.json() == {"error": {"code": "internal_error", "message": "internal error"}}
