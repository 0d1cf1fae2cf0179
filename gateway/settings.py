"""Gateway settings, read once from the environment at start-up."""

from __future__ import annotations

from dataclasses import dataclass

from infra.settings import ServiceSettings, Var, setting
from rpc.settings import RPC_REPLY_MODE, RPC_TIMEOUT_S, ReplyMode
from workers.settings import (
    MAX_PIXELS,
    STATUS_SHARDS,
    TASK_LEASE_S,
    TASK_QUEUE_MAX_LENGTH,
    StorageSettings,
)

# Read by the web process and the CLI (``taskgate token``).
# The autoscaling signal (gateway/autoscale.py); `taskgate queues` reads them too.
AUTOSCALE_WINDOW_S = Var(
    "AUTOSCALE_WINDOW_S", 60.0, "Arrival and completion rates are averaged over this window."
)
AUTOSCALE_DRAIN_S = Var(
    "AUTOSCALE_DRAIN_S",
    60.0,
    "taskgate_desired_workers adds the workers that would drain the ready backlog in this time.",
)
AUTOSCALE_MIN_WORKERS = Var(
    "AUTOSCALE_MIN_WORKERS", 0, "Lower bound of taskgate_desired_workers (0: scale to zero)."
)
AUTOSCALE_MAX_WORKERS = Var("AUTOSCALE_MAX_WORKERS", 20, "Upper bound of taskgate_desired_workers.")
SECRET_KEY = Var(
    "SECRET_KEY",
    "",
    "Signs access tokens (HS256); the gateway refuses to start without one. Never in code.",
    secret=True,
)


@dataclass(frozen=True)
class GatewaySettings(ServiceSettings, StorageSettings):
    """What the web process needs to know; defaults run on one laptop."""

    read_by = ("web",)

    host: str = setting("HOST", "127.0.0.1", "The address the gateway listens on.")
    port: int = setting("PORT", 8000, "The port the gateway listens on.")
    secret_key: str = setting(SECRET_KEY)
    metrics_token: str | None = setting(
        "METRICS_TOKEN",
        None,
        "The Bearer token `GET /metrics` on the web port asks for (unset: 404 there;"
        " METRICS_PORT serves metrics without one, on METRICS_HOST).",
        secret=True,
    )
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
        "How long a request that publishes itself (a notification, /readyz's probe) waits for"
        " the broker's confirm before answering 503. Uploads and orders go through the outbox.",
    )
    outbox_max_pending: int = setting(
        "OUTBOX_MAX_PENDING",
        10_000,
        "Accepted uploads and orders not yet confirmed by the broker (all gateways together)"
        " beyond which new ones are refused with 503 + Retry-After, nothing stored.",
    )
    outbox_lease_s: float = setting(
        "OUTBOX_LEASE_S",
        30.0,
        "How long a relay's claim on outbox messages holds: another gateway publishes those of"
        " a dead one after it. A relay waits up to half of it for a confirm.",
    )
    outbox_poll_s: float = setting(
        "OUTBOX_POLL_S",
        1.0,
        "How often the outbox relay looks for messages due again or left by another gateway"
        " (its own accepts wake it at once).",
    )
    outbox_retry_max_s: float = setting(
        "OUTBOX_RETRY_MAX_S",
        30.0,
        "The longest pause between two attempts to publish one outbox message (backoff).",
    )
    orphan_grace_s: float = setting(
        "ORPHAN_GRACE_S",
        3600.0,
        "An upload directory older than this without a task (the upload was never accepted)"
        " is removed.",
    )
    orphan_sweep_s: float = setting(
        "ORPHAN_SWEEP_S",
        300.0,
        "How often the web process looks for upload directories without a task.",
    )
    task_lease_s: float = setting(TASK_LEASE_S)
    autoscale_interval_s: float = setting(
        "AUTOSCALE_INTERVAL_S",
        5.0,
        "How often the web process refreshes the autoscaling gauges on /metrics.",
    )
    autoscale_window_s: float = setting(AUTOSCALE_WINDOW_S)
    admin_sample_s: float = setting(
        "ADMIN_SAMPLE_S",
        2.0,
        "How often the admin stream sends the overview; every admin page on a web process"
        " shares one sample per interval.",
    )
    admin_history_step_s: float = setting(
        "ADMIN_HISTORY_STEP_S",
        15.0,
        "The step of the admin page's 15-minute charts: one sample of queue depths and tasks"
        " in flight per step, taken by one web process for all.",
    )
    autoscale_drain_s: float = setting(AUTOSCALE_DRAIN_S)
    autoscale_min_workers: int = setting(AUTOSCALE_MIN_WORKERS)
    autoscale_max_workers: int = setting(AUTOSCALE_MAX_WORKERS)
    task_retention_s: float = setting(
        "TASK_RETENTION_S",
        7 * 24 * 3600.0,
        "How long a finished task (its events, files and the workers' records) is kept after"
        " it ended; then the sweeper removes it and it is 404.",
    )
    task_retention_batch: int = setting(
        "TASK_RETENTION_BATCH",
        500,
        "Finished tasks removed per transaction (short transactions: no long locks).",
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
    status_shards: int = setting(STATUS_SHARDS)
    recorder_records: tuple[int, ...] | None = setting(
        "RECORDER_RECORDS",
        None,
        "The journal shards this process records (e.g. 0,1); empty: all. Each shard has one"
        " active recorder at a time, whichever process consumes it first.",
        shown="all",
    )
    recorder_linger_ms: float = setting(
        "RECORDER_LINGER_MS",
        5.0,
        "How long the recorder waits for more status events before recording a batch that is"
        " not full: more CPU per event below it, more latency above it (docs/benchmarks.md).",
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
    # What one client may make the web process hold or do (issue 16: HTTP limits).
    allowed_hosts: tuple[str, ...] = setting(
        "ALLOWED_HOSTS",
        ("127.0.0.1", "localhost", "[::1]"),
        "Host header values the gateway answers (`*.example.com` for subdomains, `*` for any;"
        " others get 400). Add the public name whenever HOST is not a loopback address.",
    )
    max_header_bytes: int = setting(
        "MAX_HEADER_BYTES",
        16_384,
        "Largest request line and headers; beyond, 431 and the connection is closed.",
    )
    header_timeout_s: float = setting(
        "HEADER_TIMEOUT_S",
        10.0,
        "A connection sends a request's complete headers within this time, else 408 and closed.",
    )
    body_timeout_s: float = setting(
        "BODY_TIMEOUT_S",
        10.0,
        "A request body brings at least 240 bytes/s over each window this long, else 408 and"
        " the connection is closed.",
    )
    uploads_per_user: int = setting(
        "UPLOADS_PER_USER", 4, "Uploads one user may be sending at once (429 beyond)."
    )
    tasks_in_flight_per_user: int = setting(
        "TASKS_IN_FLIGHT_PER_USER",
        32,
        "Unfinished tasks (scheduled, queued, running, retrying) one user may have; 429 beyond.",
    )
    max_task_delay_s: float = setting(
        "MAX_TASK_DELAY_S",
        7 * 24 * 3600.0,
        "How far ahead a task may be delayed (`delay_s`, `run_at`); 422 beyond. A delayed task"
        " is one outbox row until it is due and counts as unfinished for its user.",
    )
    max_thumbnail_sizes: int = setting(
        "MAX_THUMBNAIL_SIZES", 6, "Sizes one upload may ask for (`sizes=`); 422 beyond."
    )

    # Identity, sessions and notifications (issue 16: items 5, 6, 7, 15).
    session_cache_s: float = setting(
        "SESSION_CACHE_S",
        5.0,
        "How long a web process trusts what it read of a session or of a token's revocation. "
        "Sign-out reaches other web processes at once over the broker; without the broker, "
        "after at most this long.",
    )
    notifications_per_minute: float = setting(
        "NOTIFICATIONS_PER_MINUTE",
        30.0,
        "Notifications one user may send per minute, after a burst (429 with Retry-After beyond).",
    )
    notification_burst: int = setting(
        "NOTIFICATION_BURST", 10, "Notifications one user may send at once before the rate applies."
    )
    jwks_url: str = setting(
        "JWKS_URL",
        "",
        "An identity provider's JWKS URL: its RS256/ES256 tokens are accepted besides "
        "SECRET_KEY's (needs JWT_ISSUER and JWT_AUDIENCE).",
    )
    jwt_issuer: str = setting(
        "JWT_ISSUER", "", "The `iss` every identity-provider token must carry."
    )
    jwt_audience: str = setting(
        "JWT_AUDIENCE", "", "The `aud` every identity-provider token must include (taskgate's)."
    )
    jwt_roles_claim: str = setting(
        "JWT_ROLES_CLAIM",
        "roles",
        "The claim of an identity-provider token listing the user's roles (a dotted path, "
        "e.g. realm_access.roles).",
    )
    jwt_admin_role: str = setting(
        "JWT_ADMIN_ROLE",
        "admin",
        "The role (in JWT_ROLES_CLAIM) that makes an identity-provider user an admin.",
    )
    jwks_cache_s: float = setting(
        "JWKS_CACHE_S", 300.0, "How long the identity provider's key set is kept."
    )
    jwks_refetch_cooldown_s: float = setting(
        "JWKS_REFETCH_COOLDOWN_S",
        30.0,
        "Least time between fetches of the key set for a token naming an unknown key id.",
    )
    jwks_timeout_s: float = setting(
        "JWKS_TIMEOUT_S", 5.0, "How long one fetch of the key set may take."
    )
