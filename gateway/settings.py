"""Gateway settings, read once from the environment at start-up."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from infra.settings import ServiceSettings, Var, setting
from rpc.settings import RPC_REPLY_MODE, RPC_TIMEOUT_S, ReplyMode
from workers.settings import MAX_PIXELS, STORAGE_DIR, TASK_QUEUE_MAX_LENGTH
from workers.topology import DEFAULT_STATUS_SHARDS

# Read by the web process and the CLI (``taskgate token``).
SECRET_KEY = Var(
    "SECRET_KEY",
    "",
    "Signs access tokens (HS256); the gateway refuses to start without one. Never in code.",
    secret=True,
)


@dataclass(frozen=True)
class GatewaySettings(ServiceSettings):
    """What the web process needs to know; defaults run on one laptop."""

    read_by = ("web",)

    host: str = setting("HOST", "127.0.0.1", "The address the gateway listens on.")
    port: int = setting("PORT", 8000, "The port the gateway listens on.")
    secret_key: str = setting(SECRET_KEY)
    cookie_secure: bool = setting(
        "COOKIE_SECURE",
        False,
        "Set the session cookie's Secure flag (on whenever the gateway is served over HTTPS).",
    )
    cors_origins: tuple[str, ...] = setting(
        "CORS_ORIGINS",
        (),
        "Origins of a separate front-end allowed to call the API with credentials (CORS).",
    )
    rpc_timeout_s: float = setting(RPC_TIMEOUT_S)
    rpc_reply_mode: ReplyMode = setting(RPC_REPLY_MODE)
    storage_dir: Path = setting(STORAGE_DIR)
    max_upload_bytes: int = setting(
        "MAX_UPLOAD_BYTES", 20 * 1024 * 1024, "Largest upload accepted (413 beyond)."
    )
    max_pixels: int = setting(MAX_PIXELS)
    upload_kind: str = setting(
        "UPLOAD_KIND", "images.thumbnail", "The task kind an upload creates."
    )
    queue_max_length: int = setting(TASK_QUEUE_MAX_LENGTH)
    publish_timeout_s: float = setting(
        "PUBLISH_TIMEOUT_S",
        1.0,
        "How long an upload waits for the broker's confirm before answering 503.",
    )
    store_write_timeout_s: float = setting(
        "STORE_WRITE_TIMEOUT_S",
        2.0,
        "How long a store write waits (for another process's lock too) before answering 503.",
    )
    ready_timeout_s: float = setting(
        "READY_TIMEOUT_S",
        3.0,
        "/readyz: the bound on each check (a confirmed publish, a committed store write).",
    )
    ready_cache_s: float = setting(
        "READY_CACHE_S",
        1.0,
        "/readyz: how long an answer is reused, so frequent polling adds no load.",
    )
    sse_ping_s: float = setting("SSE_PING_S", 15.0, "Interval of the SSE heartbeat comment.")
    sse_send_timeout_s: float = setting(
        "SSE_SEND_TIMEOUT_S", 10.0, "How long one SSE write may take before the stream is cut."
    )
    sse_buffer_events: int = setting(
        "SSE_BUFFER_EVENTS",
        256,
        "Events buffered per SSE subscriber before a slow one is cut off.",
    )
    sse_retry_ms: int = setting(
        "SSE_RETRY_MS", 2_000, "The reconnect delay the SSE stream tells clients."
    )
    sse_max_per_user: int = setting(
        "SSE_MAX_PER_USER", 16, "Open SSE streams one user may hold (429 beyond)."
    )
    sse_max_streams: int = setting(
        "SSE_MAX_STREAMS", 40_000, "Open SSE streams one web process may hold (503 beyond)."
    )
    recorder_shards: int = setting(
        "RECORDER_SHARDS",
        DEFAULT_STATUS_SHARDS,
        "Journal shards status events are spread over by task id (status.journal.<k>); the same"
        " in every web process. Workers declare the default 4; change it only with every"
        " journal empty.",
    )
    recorder_records: tuple[int, ...] | None = setting(
        "RECORDER_RECORDS",
        None,
        "The journal shards this process records (e.g. 0,1); empty: all. Each shard has one"
        " active recorder at a time, whichever process consumes it first.",
        shown="all",
    )
    recorder_max_lag_s: float = setting(
        "RECORDER_MAX_LAG_S",
        10.0,
        "/readyz: 503 while a status event held by this process's recorder waits longer.",
    )
    recorder_max_backlog: int = setting(
        "RECORDER_MAX_BACKLOG",
        10_000,
        "/readyz: 503 while more status events than this wait in the journal shards.",
    )
