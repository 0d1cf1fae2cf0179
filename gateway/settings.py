"""Gateway settings, read once from the environment at start-up."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from rpc.settings import DEFAULT_AMQP_URL
from workers.settings import DEFAULT_DATABASE_PATH
from workers.topology import DEFAULT_QUEUE_MAX_LENGTH


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    """What the web process needs to know; defaults run on one laptop."""

    amqp_url: str = DEFAULT_AMQP_URL
    # Signs access tokens (HS256); from SECRET_KEY, never from code. The app refuses to
    # start without one.
    secret_key: str = field(default="", repr=False)
    # Set the session cookie's Secure flag (on whenever the gateway is served over HTTPS).
    cookie_secure: bool = False
    # Origins of a separate front-end allowed to call the API with credentials (CORS).
    cors_origins: tuple[str, ...] = ()
    reconnect_interval_s: float = 1.0
    rpc_timeout_s: float = 5.0
    # SQLite file of the task store (tasks and their status events).
    database_path: Path = DEFAULT_DATABASE_PATH
    # Uploads and task outputs; the workers must see the same directory.
    storage_dir: Path = Path("./var/storage")
    max_upload_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000
    # The task kind an upload creates.
    upload_kind: str = "images.thumbnail"
    # Must match the workers' TASK_QUEUE_MAX_LENGTH (the broker refuses other arguments).
    queue_max_length: int = DEFAULT_QUEUE_MAX_LENGTH
    # How long an upload waits for the broker's confirm before answering 503.
    publish_timeout_s: float = 1.0
    # How long a store write waits (for another process's lock too) before answering 503.
    store_write_timeout_s: float = 2.0
    # /readyz: the bound on each check (a confirmed publish, a committed write), and how
    # long an answer is reused so that frequent polling adds no load.
    ready_timeout_s: float = 3.0
    ready_cache_s: float = 1.0
    # SSE: heartbeat comment interval, per-write timeout, events buffered per
    # subscriber before a slow one is cut off, and the reconnect delay sent to clients.
    sse_ping_s: float = 15.0
    sse_send_timeout_s: float = 10.0
    sse_buffer_events: int = 256
    sse_retry_ms: int = 2_000
    # Open SSE streams a user may hold, and a process (429 / 503 beyond them).
    sse_max_per_user: int = 16
    sse_max_streams: int = 40_000

    def __post_init__(self) -> None:
        object.__setattr__(self, "database_path", Path(self.database_path))
        object.__setattr__(self, "storage_dir", Path(self.storage_dir))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> GatewaySettings:
        env = os.environ if environ is None else environ
        default = cls()
        return cls(
            amqp_url=env.get("AMQP_URL", default.amqp_url),
            secret_key=env.get("SECRET_KEY", ""),
            cookie_secure=env.get("COOKIE_SECURE", "") in {"1", "true", "yes"},
            cors_origins=tuple(o for o in env.get("CORS_ORIGINS", "").split(",") if o.strip()),
            reconnect_interval_s=float(
                env.get("AMQP_RECONNECT_INTERVAL_S", default.reconnect_interval_s)
            ),
            rpc_timeout_s=float(env.get("RPC_TIMEOUT_S", default.rpc_timeout_s)),
            database_path=Path(env.get("DATABASE_PATH", str(default.database_path))),
            storage_dir=Path(env.get("STORAGE_DIR", str(default.storage_dir))),
            max_upload_bytes=int(env.get("MAX_UPLOAD_BYTES", default.max_upload_bytes)),
            max_pixels=int(env.get("MAX_PIXELS", default.max_pixels)),
            upload_kind=env.get("UPLOAD_KIND", default.upload_kind),
            queue_max_length=int(env.get("TASK_QUEUE_MAX_LENGTH", default.queue_max_length)),
            publish_timeout_s=float(env.get("PUBLISH_TIMEOUT_S", default.publish_timeout_s)),
            store_write_timeout_s=float(
                env.get("STORE_WRITE_TIMEOUT_S", default.store_write_timeout_s)
            ),
            ready_timeout_s=float(env.get("READY_TIMEOUT_S", default.ready_timeout_s)),
            ready_cache_s=float(env.get("READY_CACHE_S", default.ready_cache_s)),
            sse_ping_s=float(env.get("SSE_PING_S", default.sse_ping_s)),
            sse_send_timeout_s=float(env.get("SSE_SEND_TIMEOUT_S", default.sse_send_timeout_s)),
            sse_buffer_events=int(env.get("SSE_BUFFER_EVENTS", default.sse_buffer_events)),
            sse_retry_ms=int(env.get("SSE_RETRY_MS", default.sse_retry_ms)),
            sse_max_per_user=int(env.get("SSE_MAX_PER_USER", default.sse_max_per_user)),
            sse_max_streams=int(env.get("SSE_MAX_STREAMS", default.sse_max_streams)),
        )
