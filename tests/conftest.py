"""Shared fixtures: a private RabbitMQ node, PostgreSQL server and S3 server for the whole session.

Set AMQP_URL to test against an existing broker instead; tests that need to
restart the broker are then skipped. PostgreSQL is always a server of our own
(never one we did not start); each test that asks gets a fresh database in it.
If a server cannot boot, the first test that needs it shows why and every
other one errors with a one-line pointer to it. The S3 server is moto's server
mode in a child process (``infra/s3_server.py`` says why); the ``storage``
fixtures run a test on the local directory and on S3, as ``database`` runs it
on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aio_pika
import pytest
from aio_pika.abc import AbstractRobustConnection

import rpc
from infra.database import Database, open_database
from infra.node import BootError, BrokerNode, NodeConfig
from infra.postgres_node import PostgresBootError, PostgresConfig, PostgresNode
from infra.s3_server import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, S3BootError, S3Server
from infra.storage import Storage, StorageConfig, open_storage
from workers.access import ROLES, create_users


@dataclass(frozen=True)
class BrokerHandle:
    """The broker under test: its URL, and our node if we started one."""

    amqp_url: str
    node: BrokerNode | None
    # AMQP URLs of the least-privilege users by process type (web, worker, rpc).
    role_urls: dict[str, str]


_boot_error_shown = pytest.StashKey[set[str]]()
# The session's servers whose boot failure is shown once: the error, and what it is called.
_BOOT_ERRORS: tuple[tuple[type[Exception], str], ...] = (
    (BootError, "RabbitMQ node"),
    (PostgresBootError, "PostgreSQL server"),
    (S3BootError, "S3 server"),
)
# The session S3 server's bucket; each test gets a prefix of its own in it.
TEST_BUCKET = "taskgate-tests"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Show why a session's server did not boot once, not again for every test needing it.

    pytest re-raises a session fixture's exception for each dependent test.
    """
    report = yield
    if call.when == "setup" and call.excinfo is not None:
        for error, server in _BOOT_ERRORS:
            if call.excinfo.errisinstance(error):
                shown = item.config.stash.setdefault(_boot_error_shown, set())
                if server in shown:
                    report.longrepr = (
                        f"the session's {server} did not boot: see the first error above"
                    )
                else:
                    report.longrepr = str(call.excinfo.value)  # its log; our stack adds nothing
                    shown.add(server)
    return report


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerHandle]:
    """The session's broker: $AMQP_URL if set, else a fresh private node."""
    url = os.environ.get("AMQP_URL")
    if url:
        # Someone else's broker: we do not create users there.
        yield BrokerHandle(amqp_url=url, node=None, role_urls={r.name: url for r in ROLES})
        return
    node = BrokerNode(NodeConfig.on_free_ports(tmp_path_factory.mktemp("broker")))
    try:
        node.start()
        role_urls = create_users(node.rabbitmqctl, node.amqp_url)
        yield BrokerHandle(amqp_url=node.amqp_url, node=node, role_urls=role_urls)
    finally:
        node.stop()


@pytest.fixture(scope="session")
def amqp_url(broker: BrokerHandle) -> str:
    return broker.amqp_url


@pytest.fixture(scope="session")
def role_urls(broker: BrokerHandle) -> dict[str, str]:
    """AMQP URLs of the web, worker and rpc users, each limited to what its process does."""
    return broker.role_urls


@pytest.fixture
async def connection(amqp_url: str) -> AsyncIterator[rpc.WireConnection]:
    """The lean connection (rpc.wire) that RPC, workers and submitters run on."""
    conn = await rpc.connect_wire(amqp_url, name="test", reconnect_interval_s=0.2)
    yield conn
    await conn.close()


@pytest.fixture
async def pika_connection(amqp_url: str) -> AsyncIterator[AbstractRobustConnection]:
    """An aio-pika connection, to publish and inspect as a foreign client would."""
    conn = await aio_pika.connect_robust(
        amqp_url, reconnect_interval=0.2, client_properties={"connection_name": "test-pika"}
    )
    yield conn
    await conn.close()


@pytest.fixture
def unique_name() -> Callable[[str], str]:
    """Factory of names no other test uses: unique_name("rpc") -> "test.1a2b3c4d.rpc"."""

    def make(suffix: str = "x") -> str:
        return f"test.{uuid.uuid4().hex[:8]}.{suffix}"

    return make


@pytest.fixture
def restart_broker(broker: BrokerHandle) -> Callable[[], Awaitable[None]]:
    """Async callable restarting the broker (data kept); skips the test without our node."""
    node = broker.node
    if node is None:
        pytest.skip("broker restart needs our own node (AMQP_URL is set)")

    async def restart() -> None:
        await asyncio.to_thread(node.restart)

    return restart


@pytest.fixture(scope="session")
def spare_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerNode]:
    """A second node for the session, booted once (a boot takes seconds) by its first user."""
    node = BrokerNode(NodeConfig.on_free_ports(tmp_path_factory.mktemp("own-broker")))
    try:
        yield node
    finally:
        resume(node)
        node.stop()


@pytest.fixture
def own_broker(spare_broker: BrokerNode) -> Iterator[BrokerNode]:
    """The spare node, running, for a test to freeze (SIGSTOP), alarm or stop without troubling
    the others; a test puts back the alarm it set, and restarting a node it stopped is left to
    the next test that needs it."""
    spare_broker.start()  # a no-op while it runs
    try:
        yield spare_broker
    finally:
        resume(spare_broker)  # should a failed test have left it frozen


def resume(node: BrokerNode) -> None:
    """SIGCONT a node that may have been frozen with SIGSTOP."""
    pid = node.pid
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresNode]:
    """The session's private PostgreSQL server (no fsync: a test run needs no durability)."""
    # Not under pytest's temp dir: that one is closed to the postgres user the server runs
    # as when we are root.
    base_dir = Path(tempfile.mkdtemp(prefix="taskgate-postgres-"))
    node = PostgresNode(PostgresConfig.on_free_port(base_dir))
    try:
        node.start()
        yield node
    finally:
        node.stop()
        shutil.rmtree(base_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url(postgres: PostgresNode) -> str:
    """URL of the session server's own database (shared by every test: prefer ``pg_url``)."""
    return postgres.url()


@pytest.fixture
def pg_url(postgres: PostgresNode) -> Iterator[str]:
    """URL of a fresh, empty database of this test's own, dropped after it."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    url = postgres.create_database(name)
    yield url
    postgres.drop_database(name)


@pytest.fixture(params=["sqlite", "postgresql"])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """A fresh, empty store database, closed after the test: each test runs on both backends.

    SQLite: a file in the test's temp dir; PostgreSQL: a database of its own (``pg_url``).
    """
    if request.param == "postgresql":
        url: str | Path = request.getfixturevalue("pg_url")
    else:
        url = tmp_path / "store.db"
    db = await open_database(url, write_timeout_s=2.0)
    try:
        yield db
    finally:
        await db.close()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """The session's private S3-compatible server (moto), with the bucket TEST_BUCKET."""
    base_dir = Path(tempfile.mkdtemp(prefix="taskgate-s3-"))
    server = S3Server(base_dir)
    try:
        server.start()
        server.create_bucket(TEST_BUCKET)
        yield server
    finally:
        server.stop()
        shutil.rmtree(base_dir, ignore_errors=True)


@pytest.fixture(params=["local", "s3"])
def storage_config(request: pytest.FixtureRequest, tmp_path: Path) -> StorageConfig:
    """Where the test's files live: each test runs on both backends.

    Local: a directory in the test's temp dir; S3: a prefix of the test's own in
    the session server's bucket (small parts, so a test's multipart upload stays small).
    """
    local_dir = tmp_path / "storage"
    if request.param == "local":
        return StorageConfig(local_dir=local_dir)
    return s3_storage_config(request.getfixturevalue("s3_server"), local_dir)


def s3_storage_config(server: S3Server, local_dir: Path) -> StorageConfig:
    """A prefix of the test's own in ``server``'s test bucket (small parts, so a test's
    multipart upload stays small)."""
    return StorageConfig(
        url=f"s3://{TEST_BUCKET}/{uuid.uuid4().hex[:12]}",
        local_dir=local_dir,
        endpoint_url=server.endpoint_url,
        region=REGION,
        access_key_id=ACCESS_KEY_ID,
        secret_access_key=SECRET_ACCESS_KEY,
        part_bytes=5 * 1024 * 1024,
    )


@pytest.fixture
async def storage(storage_config: StorageConfig) -> AsyncIterator[Storage]:
    """The test's object store (``storage_config``), closed after it."""
    store = open_storage(storage_config)
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
def storage_leftovers(
    request: pytest.FixtureRequest, storage_config: StorageConfig, storage: Storage
) -> Callable[[], Awaitable[list[str]]]:
    """Async callable: what the test's store holds, by task prefix, and (S3) the multipart
    uploads begun there and never completed nor aborted."""

    async def leftovers() -> list[str]:
        found = sorted(await storage.task_last_changes())
        if not storage_config.is_local:
            server: S3Server = request.getfixturevalue("s3_server")
            prefix = storage_config.url.removeprefix(f"s3://{TEST_BUCKET}/") + "/"
            uploads = server.incomplete_uploads(TEST_BUCKET)
            found += [f"incomplete upload {key}" for key in uploads if key.startswith(prefix)]
        return found

    return leftovers
