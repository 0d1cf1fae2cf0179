"""Worker settings, read once from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .topology import DEFAULT_QUEUE_MAX_LENGTH

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
# The SQLite file of the gateway's task store and the shop's tables.
DEFAULT_DATABASE_PATH = Path("./var/taskgate.db")


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.replace(" ", "").split(",") if part)


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """How workers consume, retry, store and shut down."""

    amqp_url: str = DEFAULT_AMQP_URL
    storage_dir: Path = Path("./var/storage")
    # Unacked task messages the broker may push, and handlers run at once.
    prefetch: int = 16
    concurrency: int = 8
    # Size of the process pool for CPU-bound work (Pillow).
    processes: int = field(default_factory=lambda: os.cpu_count() or 1)
    # Fixed delay tiers; attempt n waits retry_delays_ms[n - 1] (the last tier repeats).
    retry_delays_ms: tuple[int, ...] = (1_000, 5_000, 30_000, 120_000)
    max_attempts: int = 5
    # Must match every other process that declares the task queues (TASK_QUEUE_MAX_LENGTH).
    queue_max_length: int = DEFAULT_QUEUE_MAX_LENGTH
    thumbnail_sizes: tuple[int, ...] = (800, 256, 64)
    max_pixels: int = 40_000_000
    shutdown_grace_s: float = 30.0
    # Progress reported from a pool job: the latest report of each interval is published,
    # so a job shorter than this publishes none (0: every report at once).
    progress_interval_s: float = 0.25
    reconnect_interval_s: float = 1.0
    database_path: Path = DEFAULT_DATABASE_PATH
    # The email provider's HTTP API; without a URL, confirmations are only logged.
    email_api_url: str = ""
    email_api_key: str = ""
    email_timeout_s: float = 5.0
    email_attempts: int = 4

    def __post_init__(self) -> None:
        object.__setattr__(self, "storage_dir", Path(self.storage_dir))
        object.__setattr__(self, "database_path", Path(self.database_path))
        if not self.retry_delays_ms or min(self.retry_delays_ms) <= 0:
            raise ValueError("RETRY_DELAYS_MS needs at least one positive delay")
        if self.max_attempts < 1:
            raise ValueError("MAX_ATTEMPTS must be at least 1")
        if not self.thumbnail_sizes or min(self.thumbnail_sizes) <= 0:
            raise ValueError("THUMBNAIL_SIZES needs at least one positive size")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> WorkerSettings:
        """Build settings from ``AMQP_URL``, ``STORAGE_DIR``, ``WORKER_*`` and related variables."""
        env = os.environ if environ is None else environ
        default = cls()
        return cls(
            amqp_url=env.get("AMQP_URL", default.amqp_url),
            storage_dir=Path(env.get("STORAGE_DIR", str(default.storage_dir))),
            prefetch=int(env.get("WORKER_PREFETCH", default.prefetch)),
            concurrency=int(env.get("WORKER_CONCURRENCY", default.concurrency)),
            processes=int(env.get("WORKER_PROCESSES", default.processes)),
            retry_delays_ms=_ints(env["RETRY_DELAYS_MS"])
            if "RETRY_DELAYS_MS" in env
            else default.retry_delays_ms,
            max_attempts=int(env.get("MAX_ATTEMPTS", default.max_attempts)),
            queue_max_length=int(env.get("TASK_QUEUE_MAX_LENGTH", default.queue_max_length)),
            thumbnail_sizes=_ints(env["THUMBNAIL_SIZES"])
            if "THUMBNAIL_SIZES" in env
            else default.thumbnail_sizes,
            max_pixels=int(env.get("MAX_PIXELS", default.max_pixels)),
            shutdown_grace_s=float(env.get("SHUTDOWN_GRACE_S", default.shutdown_grace_s)),
            progress_interval_s=float(env.get("PROGRESS_INTERVAL_S", default.progress_interval_s)),
            reconnect_interval_s=float(
                env.get("AMQP_RECONNECT_INTERVAL_S", default.reconnect_interval_s)
            ),
            database_path=Path(env.get("DATABASE_PATH", str(default.database_path))),
            email_api_url=env.get("EMAIL_API_URL", default.email_api_url),
            email_api_key=env.get("EMAIL_API_KEY", default.email_api_key),
            email_timeout_s=float(env.get("EMAIL_TIMEOUT_S", default.email_timeout_s)),
            email_attempts=int(env.get("EMAIL_ATTEMPTS", default.email_attempts)),
        )

    def retry_delay_ms(self, attempt: int) -> int:
        """Delay before the attempt after ``attempt`` (1-based)."""
        return self.retry_delays_ms[min(attempt, len(self.retry_delays_ms)) - 1]
