"""The private PostgreSQL server of tests, benches and scripts/postgres (infra/postgres_node)."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import asyncpg
import pytest

from infra.ports import free_port
from infra.postgres_node import PostgresBootError, PostgresConfig, PostgresNode


@pytest.fixture
def base_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="taskgate-postgres-test-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def own_node(base_dir: Path) -> Iterator[PostgresNode]:
    """A server of this test's own, to kill or stop."""
    node = PostgresNode(PostgresConfig.on_free_port(base_dir))
    try:
        node.start()
        yield node
    finally:
        node.stop()


def cluster_state(node: PostgresNode) -> str:
    """What pg_controldata says of the cluster: "shut down", "in production", ..."""
    done = subprocess.run(
        [str(node._bin / "pg_controldata"), str(node.config.data_dir)],
        capture_output=True,
        text=True,
        check=True,
    )
    for line in done.stdout.splitlines():
        if line.startswith("Database cluster state:"):
            return line.partition(":")[2].strip()
    raise AssertionError(done.stdout)


async def test_superuser_logs_in_with_its_password_over_tcp(postgres_url: str) -> None:
    conn = await asyncpg.connect(postgres_url)
    try:
        assert await conn.fetchval("SHOW listen_addresses") == "127.0.0.1"
        assert await conn.fetchval("SELECT current_database()") == "taskgate"
    finally:
        await conn.close()


async def test_a_wrong_password_is_refused(postgres: PostgresNode) -> None:
    url = postgres.url().replace(postgres.password, "not-the-password")
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(url)


def test_server_does_not_run_as_root(postgres: PostgresNode) -> None:
    pid = postgres.pid
    assert pid is not None
    assert os.stat(f"/proc/{pid}").st_uid != 0


def test_tests_run_without_fsync(postgres: PostgresNode) -> None:
    assert postgres.psql("SHOW fsync").strip() == "off"


async def test_each_test_gets_an_empty_database_of_its_own(pg_url: str, postgres_url: str) -> None:
    assert pg_url != postgres_url
    conn = await asyncpg.connect(pg_url)
    try:
        tables = await conn.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        assert tables == 0
    finally:
        await conn.close()


async def test_dropping_a_database_ends_its_sessions(postgres: PostgresNode) -> None:
    url = await asyncio.to_thread(postgres.create_database, "test_drop_with_session")
    conn = await asyncpg.connect(url)
    try:
        await asyncio.to_thread(postgres.drop_database, "test_drop_with_session")
        with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, OSError)):
            await conn.fetchval("SELECT 1")
    finally:
        conn.terminate()
    left = await asyncio.to_thread(
        postgres.psql, "SELECT count(*) FROM pg_database WHERE datname = 'test_drop_with_session'"
    )
    assert left.strip() == "0"


def test_second_start_is_a_noop(postgres: PostgresNode) -> None:
    pid = postgres.pid
    again = PostgresNode(postgres.config)
    again.start()
    assert again.pid == pid


async def test_killed_server_restarts_with_committed_data(own_node: PostgresNode) -> None:
    conn = await asyncpg.connect(own_node.url())
    await conn.execute("CREATE TABLE t (v BIGINT); INSERT INTO t VALUES (42)")
    own_node.kill()
    assert own_node.pid is None
    with pytest.raises(OSError):
        await asyncpg.connect(own_node.url(), timeout=5)
    own_node.start()
    conn2 = await asyncpg.connect(own_node.url())
    try:
        assert await conn2.fetchval("SELECT v FROM t") == 42
    finally:
        await conn2.close()
        conn.terminate()


def wait_until_busy(node: PostgresNode) -> None:
    """Until another session runs a generate_series query (the server offers no event)."""
    busy = (
        "SELECT count(*) FROM pg_stat_activity WHERE state = 'active'"
        " AND query LIKE '%generate_series%' AND pid <> pg_backend_pid()"
    )
    deadline = time.monotonic() + 60
    while node.psql(busy).strip() != "1":
        assert time.monotonic() < deadline, "the busy query never ran"
        time.sleep(0.05)


async def test_kill_ends_a_busy_backend_too_so_the_server_starts_again(
    own_node: PostgresNode,
) -> None:
    conn = await asyncpg.connect(own_node.url())
    # Busy on the CPU, a backend does not look for its postmaster's death: it would stay
    # attached to the shared memory, and the next start would refuse to run.
    busy = asyncio.create_task(
        conn.fetchval("SELECT count(*) FROM generate_series(1, 10000000000::bigint)")
    )
    await asyncio.to_thread(wait_until_busy, own_node)
    await asyncio.to_thread(own_node.kill)
    await asyncio.to_thread(own_node.start)
    assert own_node.is_running()
    with pytest.raises((OSError, asyncpg.PostgresError, asyncpg.InterfaceError)):
        await busy
    conn.terminate()


def test_stop_shuts_the_cluster_down_cleanly(own_node: PostgresNode) -> None:
    assert cluster_state(own_node) == "in production"
    own_node.stop()
    assert own_node.pid is None
    assert cluster_state(own_node) == "shut down"


def test_fsync_is_on_unless_turned_off(base_dir: Path) -> None:
    node = PostgresNode(PostgresConfig(base_dir=base_dir, port=free_port()))
    try:
        node.start()
        assert node.psql("SHOW fsync").strip() == "on"
    finally:
        node.stop()


def test_start_refuses_a_port_taken_by_a_foreign_listener(base_dir: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as foreign:
        foreign.bind(("127.0.0.1", 0))
        foreign.listen()
        port = foreign.getsockname()[1]
        node = PostgresNode(PostgresConfig(base_dir=base_dir, port=port, fsync=False))
        with pytest.raises(PostgresBootError, match=f"port {port} is already in use"):
            node.start(timeout_s=10)
        assert not node.is_running()
        assert not node.config.data_dir.exists()  # nothing made before the check


def test_a_boot_failure_quotes_the_servers_log(base_dir: Path) -> None:
    config = replace(PostgresConfig.on_free_port(base_dir), max_connections=0)
    node = PostgresNode(config)
    with pytest.raises(PostgresBootError) as failure:
        node.start(timeout_s=30)
    message = str(failure.value)
    assert "exited during start" in message
    assert "max_connections" in message  # the server's own FATAL line
    assert not node.is_running()
