"""WorkerSettings from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from workers import WorkerSettings


def test_from_env_reads_every_variable():
    settings = WorkerSettings.from_env(
        {
            "AMQP_URL": "amqp://u:p@broker:5672/",
            "STORAGE_DIR": "/srv/files",
            "WORKER_PREFETCH": "32",
            "WORKER_CONCURRENCY": "6",
            "WORKER_PROCESSES": "3",
            "RETRY_DELAYS_MS": "100, 2000,30000",
            "MAX_ATTEMPTS": "4",
            "THUMBNAIL_SIZES": "512,128",
            "MAX_PIXELS": "1000000",
            "SHUTDOWN_GRACE_S": "2.5",
        }
    )

    assert settings == WorkerSettings(
        amqp_url="amqp://u:p@broker:5672/",
        storage_dir=Path("/srv/files"),
        prefetch=32,
        concurrency=6,
        processes=3,
        retry_delays_ms=(100, 2000, 30000),
        max_attempts=4,
        thumbnail_sizes=(512, 128),
        max_pixels=1_000_000,
        shutdown_grace_s=2.5,
    )


def test_defaults_run_without_configuration():
    settings = WorkerSettings.from_env({})

    assert settings.storage_dir == Path("var/storage")
    assert settings.retry_delays_ms == (1_000, 5_000, 30_000, 120_000)
    assert settings.thumbnail_sizes == (800, 256, 64)


def test_retry_delay_repeats_the_last_tier():
    settings = WorkerSettings(retry_delays_ms=(10, 20))

    assert [settings.retry_delay_ms(a) for a in (1, 2, 3, 9)] == [10, 20, 20, 20]


@pytest.mark.parametrize(
    ("variable", "value"),
    [("RETRY_DELAYS_MS", ""), ("MAX_ATTEMPTS", "0"), ("THUMBNAIL_SIZES", "0")],
)
def test_invalid_values_are_refused(variable, value):
    with pytest.raises(ValueError):
        WorkerSettings.from_env({variable: value})
