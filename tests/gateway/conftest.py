"""Gateway fixtures: the app in-process behind httpx, or real gateway and worker processes."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import httpx_sse
import pytest
from PIL import Image

import rpc
from gateway.app import create_app
from gateway.settings import GatewaySettings
from gateway.tokens import mint
from infra.netns import Host
from infra.ports import free_port

from ..helpers import eventually, on_storage, storage_env

REPO = Path(__file__).resolve().parents[2]
TEST_TASKS = "tests.gateway.tasks_for_gateway:registry"


USER = "ada"


def bearer(
    settings: GatewaySettings, user: str = USER, ttl_s: float = 3600, *, admin: bool = False
) -> dict[str, str]:
    """Headers that authenticate as ``user`` (an admin with ``admin``) with a token signed
    by the gateway's key."""
    token = mint(settings.secret_key, user, ttl_s=ttl_s, admin=admin)
    return {"Authorization": f"Bearer {token}"}


@contextlib.asynccontextmanager
async def running_app(
    settings: GatewaySettings, *, user: str | None = USER
) -> AsyncIterator[httpx.AsyncClient]:
    """Start the app's lifespan and yield an httpx client wired to it, signed in as ``user``.

    httpx's ASGI transport returns a response only once the app has finished
    it, so streams that stay open need a real server (``gateway_process``).
    """
    app = create_app(settings)
    headers = bearer(settings, user) if user is not None else {}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://gateway", headers=headers
        ) as client:
            yield client


@pytest.fixture
def gateway_app() -> Callable[..., Any]:
    """``async with gateway_app(settings) as client`` runs the real app for a test."""
    return running_app


@pytest.fixture
def kind_prefix(unique_name: Callable[[str], str]) -> str:
    return unique_name("gw")


@pytest.fixture
def gateway_settings(
    request: pytest.FixtureRequest, role_urls: dict[str, str], tmp_path: Path, kind_prefix: str
) -> GatewaySettings:
    """Settings for one test: its own store and storage, its own thumbnail kind; the
    gateway connects as the broker's ``web`` user.

    A test that asks for ``storage_config`` (or ``storage``) runs on the local
    directory and on S3: these settings, and so its gateway and worker processes, use it.
    """
    settings = GatewaySettings(
        amqp_url=role_urls["web"],
        secret_key=secrets.token_urlsafe(32),
        reconnect_interval_s=0.2,
        database_path=tmp_path / "taskgate.db",
        storage_dir=tmp_path / "storage",
        upload_kind=f"{kind_prefix}.thumbnail",
        metrics_token=secrets.token_urlsafe(16),
    )
    if "storage_config" in request.fixturenames:
        return on_storage(settings, request.getfixturevalue("storage_config"))
    return settings


@pytest.fixture
async def worker_connection(role_urls: dict[str, str]) -> AsyncIterator[rpc.WireConnection]:
    """A connection as the broker's ``worker`` user: the one the recorder takes events from."""
    connection = await rpc.connect_wire(role_urls["worker"], name="test-worker")
    yield connection
    await connection.close()


def metrics_auth(settings: GatewaySettings) -> dict[str, str]:
    """The header ``GET /metrics`` on the web port asks for."""
    return {"Authorization": f"Bearer {settings.metrics_token}"}


async def wait_ready(client: httpx.AsyncClient) -> None:
    """Until /readyz says 200 (the broker connection comes up in the background)."""

    async def ready() -> bool:
        return (await client.get("/readyz")).status_code == 200

    await eventually(ready, timeout_s=30, interval_s=0.05)


def settings_env(settings: GatewaySettings) -> dict[str, str]:
    return {
        "AMQP_URL": settings.amqp_url,
        "SECRET_KEY": settings.secret_key,
        "METRICS_TOKEN": settings.metrics_token or "",
        "AMQP_RECONNECT_INTERVAL_S": str(settings.reconnect_interval_s),
        "DATABASE_PATH": str(settings.database_path),
        **({"DATABASE_URL": settings.database_url} if settings.database_url else {}),
        **storage_env(settings),
        "UPLOAD_KIND": settings.upload_kind,
        "TASK_LEASE_S": str(settings.task_lease_s),
        "SSE_RETRY_MS": str(settings.sse_retry_ms),
        "SSE_MAX_PER_USER": str(settings.sse_max_per_user),
        "SSE_MAX_STREAMS": str(settings.sse_max_streams),
        "SESSION_CACHE_S": str(settings.session_cache_s),
        "NOTIFICATIONS_PER_MINUTE": str(settings.notifications_per_minute),
        "NOTIFICATION_BURST": str(settings.notification_burst),
        "PRESENCE_INTERVAL_S": str(settings.presence_interval_s),
        "ADMIN_SAMPLE_S": str(settings.admin_sample_s),
        "ADMIN_HISTORY_STEP_S": str(settings.admin_history_step_s),
    }


class ChildProcess:
    """A child process of ours with its output in a log file."""

    def __init__(self, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(
                argv,
                cwd=REPO,
                env={**os.environ, "PYTHONPATH": str(REPO), **env},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def terminate(self, timeout_s: float = 30) -> int:
        self.process.send_signal(signal.SIGTERM)
        return await asyncio.to_thread(self.process.wait, timeout_s)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


class GatewayProcess(ChildProcess):
    """``python -m gateway`` on a port of its own."""

    def __init__(
        self,
        settings: GatewaySettings,
        port: int,
        log_path: Path,
        extra_env: dict[str, str] | None = None,
        host: Host | None = None,
    ) -> None:
        """``host``: run in that network namespace (infra.netns), listening on its address."""
        address = host.address if host is not None else "127.0.0.1"
        self.port = port
        self.url = f"http://{address}:{port}"
        self.settings = settings
        env = {
            **settings_env(settings),
            "HOST": address,
            "PORT": str(port),
            **({"ALLOWED_HOSTS": address} if host is not None else {}),
            **(extra_env or {}),
        }
        argv = [sys.executable, "-m", "gateway"]
        super().__init__(host.argv(argv) if host is not None else argv, env, log_path)

    def client(self, user: str | None = USER) -> httpx.AsyncClient:
        """An httpx client for this gateway, signed in as ``user`` (None: anonymous)."""
        headers = bearer(self.settings, user) if user is not None else {}
        return httpx.AsyncClient(base_url=self.url, timeout=30, headers=headers)

    async def wait_ready(self) -> None:
        async with httpx.AsyncClient(base_url=self.url) as client:

            async def ready() -> bool:
                try:
                    return (await client.get("/readyz")).status_code == 200
                except httpx.TransportError:
                    return False

            await eventually(ready, timeout_s=30, interval_s=0.05)


@pytest.fixture
def gateway_process(
    gateway_settings: GatewaySettings, tmp_path: Path
) -> Iterator[Callable[..., GatewayProcess]]:
    """Factory of gateway processes sharing the test's store and storage; killed afterwards.

    ``gateway_process(port=...)`` restarts a gateway on the port an earlier one had.
    """
    started: list[GatewayProcess] = []

    def start(port: int | None = None, **overrides: Any) -> GatewayProcess:
        settings = replace(gateway_settings, **overrides)
        log = tmp_path / f"gateway-{len(started)}.log"
        started.append(GatewayProcess(settings, port or free_port(), log))
        return started[-1]

    yield start
    for process in started:
        process.kill()


@pytest.fixture
def worker_process(
    gateway_settings: GatewaySettings,
    kind_prefix: str,
    tmp_path: Path,
    role_urls: dict[str, str],
) -> Iterator[Callable[..., ChildProcess]]:
    """Factory of worker processes serving tests/gateway/tasks_for_gateway.py (and the order
    consumers with ``orders=True``; in a network namespace with ``host``); killed afterwards."""
    started: list[ChildProcess] = []

    def start(
        *, orders: bool = False, env: dict[str, str] | None = None, host: Host | None = None
    ) -> ChildProcess:
        env = {
            **settings_env(gateway_settings),
            "AMQP_URL": role_urls["worker"],
            "TASKGATE_TEST_KIND_PREFIX": kind_prefix,
            "WORKER_PROCESSES": "1",
            "SHUTDOWN_GRACE_S": "5",
            # Every progress report at once: a test image renders faster than the default interval.
            "PROGRESS_INTERVAL_S": "0",
            **(env or {}),
        }
        argv = [sys.executable, "-m", "workers", "--tasks", TEST_TASKS]
        if orders:
            argv.append("--orders")
        if host is not None:
            argv = host.argv(argv)
        started.append(ChildProcess(argv, env, tmp_path / f"worker-{len(started)}.log"))
        return started[-1]

    yield start
    for process in started:
        process.kill()


@pytest.fixture
async def rpc_process(
    gateway_settings: GatewaySettings, tmp_path: Path, role_urls: dict[str, str]
) -> AsyncIterator[ChildProcess]:
    """``python -m rpc workers.services:server`` on the test's database, ready to answer."""
    process = ChildProcess(
        [sys.executable, "-m", "rpc", "workers.services:server"],
        {**settings_env(gateway_settings), "AMQP_URL": role_urls["rpc"]},
        tmp_path / "rpc.log",
    )

    async def ready() -> bool:
        return "ready" in process.log()

    try:
        await eventually(ready, timeout_s=30, interval_s=0.05)
        yield process
    finally:
        process.kill()


def jpeg_bytes(width: int = 640, height: int = 480) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 80, 40)).save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


async def upload(
    client: httpx.AsyncClient,
    data: bytes,
    *,
    filename: str = "photo.jpg",
    content_type: str = "image/jpeg",
    fields: dict[str, str] | None = None,
) -> httpx.Response:
    return await client.post(
        "/uploads", files={"file": (filename, data, content_type)}, data=fields or {}
    )


async def read_stream(
    client: httpx.AsyncClient,
    url: str,
    *,
    headers: dict[str, str | bytes] | None = None,
    until: Callable[[httpx_sse.ServerSentEvent], bool] | None = None,
) -> list[httpx_sse.ServerSentEvent]:
    """The events of one SSE connection, until it closes or ``until`` holds for one."""
    events = []
    async with httpx_sse.aconnect_sse(client, "GET", url, headers=dict(headers or {})) as source:
        source.response.raise_for_status()
        async for event in source.aiter_sse():
            events.append(event)
            if until is not None and until(event):
                break
    return events
