"""Worker settings, and the task variables the web process and the CLI share."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from infra.settings import ServiceSettings, Settings, Var, setting
from infra.storage import StorageConfig

from .topology import DEFAULT_QUEUE_MAX_LENGTH, DEFAULT_STATUS_SHARDS

# Read by the web process and the workers (and TASK_QUEUE_MAX_LENGTH by the CLI).
STORAGE_DIR = Var(
    "STORAGE_DIR",
    Path("./var/storage"),
    "Uploads and task outputs when STORAGE_URL is unset; the web process and the workers must"
    " see the same directory.",
)
TASK_QUEUE_MAX_LENGTH = Var(
    "TASK_QUEUE_MAX_LENGTH",
    DEFAULT_QUEUE_MAX_LENGTH,
    "Messages a task queue holds before publishes are refused; the same in every process "
    "(the broker refuses a queue declared with other arguments).",
)
STATUS_SHARDS = Var(
    "STATUS_SHARDS",
    DEFAULT_STATUS_SHARDS,
    "Journal shards status events are spread over by task id (status.journal.<k>); the same"
    " in every web and worker process. Change it only with every journal empty.",
)
TASK_LEASE_S = Var(
    "TASK_LEASE_S",
    30.0,
    "A worker's lease on each task it holds (delivered, prefetched or running), renewed every"
    " third of it; a task whose lease runs out is marked stuck and published again by a web"
    " process within about 1.4 leases. The same in every web and worker process; keep it well"
    " above the hosts' clock skew and the longest pause a live worker may have.",
)
MAX_PIXELS = Var("MAX_PIXELS", 40_000_000, "Largest image (width x height) accepted and decoded.")


@dataclass(frozen=True)
class StorageSettings(Settings):
    """Where uploads and outputs live (``infra/storage.py``): the web process and the workers."""

    storage_dir: Path = setting(STORAGE_DIR)
    storage_url: str = setting(
        "STORAGE_URL",
        "",
        "Object storage for uploads and outputs on several hosts: `s3://bucket/prefix` on any"
        " S3-compatible service (with S3_ENDPOINT_URL and the S3_* credentials; unset: the"
        " local directory STORAGE_DIR).",
    )
    s3_endpoint_url: str = setting(
        "S3_ENDPOINT_URL",
        "",
        "The S3 service's URL, e.g. `https://minio.internal:9000` (unset: AWS for S3_REGION).",
    )
    s3_region: str = setting("S3_REGION", "us-east-1", "The bucket's region.")
    s3_access_key_id: str = setting(
        "S3_ACCESS_KEY_ID",
        "",
        "Access key of the S3 user (unset: the host's own credentials: AWS_* variables,"
        " instance profile).",
    )
    s3_secret_access_key: str = setting(
        "S3_SECRET_ACCESS_KEY", "", "Secret key of S3_ACCESS_KEY_ID.", secret=True
    )
    s3_part_bytes: int = setting(
        "S3_PART_BYTES",
        8 * 1024 * 1024,
        "Part size of multipart uploads (at least 5 MiB): what one upload holds in memory, twice"
        " at most; a smaller file is one PUT.",
    )

    def storage_config(self) -> StorageConfig:
        """What ``infra.storage.open_storage`` opens."""
        return StorageConfig(
            url=self.storage_url,
            local_dir=self.storage_dir,
            endpoint_url=self.s3_endpoint_url,
            region=self.s3_region,
            access_key_id=self.s3_access_key_id,
            secret_access_key=self.s3_secret_access_key,
            part_bytes=self.s3_part_bytes,
        )


@dataclass(frozen=True)
class WorkerSettings(ServiceSettings, StorageSettings):
    """How workers consume, retry, store and shut down."""

    read_by = ("worker",)

    status_shards: int = setting(STATUS_SHARDS)
    prefetch: int = setting("WORKER_PREFETCH", 16, "Unacked task messages the broker may push.")
    concurrency: int = setting("WORKER_CONCURRENCY", 8, "Task handlers run at once.")
    processes: int = setting(
        "WORKER_PROCESSES",
        factory=lambda: os.cpu_count() or 1,
        shown="the number of CPUs",
        doc="Size of the process pool for CPU-bound work (Pillow).",
    )
    retry_delays_ms: tuple[int, ...] = setting(
        "RETRY_DELAYS_MS",
        (1_000, 5_000, 30_000, 120_000),
        "Fixed retry delay tiers; attempt n waits the n-th (the last tier repeats).",
    )
    max_attempts: int = setting("MAX_ATTEMPTS", 5, "Attempts before a task is dead-lettered.")
    queue_max_length: int = setting(TASK_QUEUE_MAX_LENGTH)
    thumbnail_sizes: tuple[int, ...] = setting(
        "THUMBNAIL_SIZES", (800, 256, 64), "Longest side of each thumbnail made, in pixels."
    )
    max_pixels: int = setting(MAX_PIXELS)
    shutdown_grace_s: float = setting(
        "SHUTDOWN_GRACE_S",
        30.0,
        "On SIGTERM, how long tasks in flight may take; the rest go back to the queue.",
    )
    task_lease_s: float = setting(TASK_LEASE_S)
    task_cancel_poll_s: float = setting(
        "TASK_CANCEL_POLL_S",
        1.0,
        "How often a worker running tasks reads the store for cancels of them.",
    )
    task_cancel_grace_s: float = setting(
        "TASK_CANCEL_GRACE_S",
        10.0,
        "How long a cancelled running task may take to stop; then it is stopped for good"
        " (its pool process killed and replaced).",
    )
    progress_interval_s: float = setting(
        "PROGRESS_INTERVAL_S",
        0.25,
        "Progress from a pool job: the latest report of each interval is published "
        "(0: every report).",
    )
    email_api_url: str = setting(
        "EMAIL_API_URL", "", "The email provider's HTTP API; unset: confirmations are only logged."
    )
    email_api_key: str = setting("EMAIL_API_KEY", "", "The email provider's API key.", secret=True)
    email_timeout_s: float = setting("EMAIL_TIMEOUT_S", 5.0, "Timeout of one email API request.")
    email_attempts: int = setting("EMAIL_ATTEMPTS", 4, "Attempts to send one email.")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.retry_delays_ms or min(self.retry_delays_ms) <= 0:
            raise ValueError("RETRY_DELAYS_MS needs at least one positive delay")
        if self.max_attempts < 1:
            raise ValueError("MAX_ATTEMPTS must be at least 1")
        if self.task_lease_s <= 0:
            raise ValueError("TASK_LEASE_S must be positive")
        if not self.thumbnail_sizes or min(self.thumbnail_sizes) <= 0:
            raise ValueError("THUMBNAIL_SIZES needs at least one positive size")

    def retry_delay_ms(self, attempt: int) -> int:
        """Delay before the attempt after ``attempt`` (1-based)."""
        return self.retry_delays_ms[min(attempt, len(self.retry_delays_ms)) - 1]
