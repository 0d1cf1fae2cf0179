"""Every benchmark's tiny mode runs against the session's servers and measures each side.

A bench that measures nothing must fail: bench/sse.py once published nothing
for months and still printed its table (every figure zero, exit status 0).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from bench.common import check_measured

REPO = Path(__file__).resolve().parents[2]
# Each tiny run takes seconds on an idle machine; this bounds a loaded or stuck one.
TINY_TIMEOUT_S = 100
MEASURED = re.compile(r"^measured: (.*)$", re.MULTILINE)


def run_tiny(
    script: str,
    amqp_url: str,
    timeout_s: float = TINY_TIMEOUT_S,
    *,
    options: Sequence[str] = (),
    **env: str,
) -> dict[str, float]:
    """Run ``python bench/<script> --tiny [options]`` as the README does; what it measured,
    by name."""
    done = subprocess.run(
        [sys.executable, f"bench/{script}", "--tiny", *options],
        cwd=REPO,
        env={**os.environ, "AMQP_URL": amqp_url, **env},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    output = f"--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    assert done.returncode == 0, output
    found = MEASURED.search(done.stdout)
    assert found is not None, output
    return {
        name: float(value) for name, value in (pair.split("=") for pair in found.group(1).split())
    }


def assert_measured(measured: dict[str, float], expected: set[str]) -> None:
    assert set(measured) == expected
    assert all(value > 0 for value in measured.values()), measured


@pytest.mark.timeout(TINY_TIMEOUT_S + 20)
def test_rpc_tiny_makes_calls_on_both_sides(amqp_url: str) -> None:
    measured = run_tiny("rpc.py", amqp_url)
    assert_measured(
        measured,
        {f"{side}.calls.{n}" for side in ("aio_pika", "taskgate") for n in (1, 64)},
    )


@pytest.mark.timeout(TINY_TIMEOUT_S + 20)
def test_sse_tiny_delivers_events_on_both_sides(amqp_url: str) -> None:
    measured = run_tiny("sse.py", amqp_url)
    assert_measured(
        measured,
        {
            f"{side}.{what}"
            for side in ("baseline", "taskgate")
            for what in ("streams_held", "deliveries")
        }
        | {"broker.ceiling_events_per_s"},
    )


@pytest.mark.timeout(TINY_TIMEOUT_S + 20)
def test_sse_record_tiny_measures_the_broker_and_the_recorders(amqp_url: str) -> None:
    measured = run_tiny("sse_record.py", amqp_url)
    assert_measured(
        measured,
        {"broker.events_per_s", "recorders.1.events_per_s", "recorders.2.events_per_s"},
    )


# Six sides, each with worker processes of its own (and Redis for taskiq) to start.
@pytest.mark.timeout(3 * TINY_TIMEOUT_S)
def test_tasks_tiny_runs_tasks_on_every_side(amqp_url: str, pg_url: str) -> None:
    measured = run_tiny("tasks.py", amqp_url, 2.5 * TINY_TIMEOUT_S, DATABASE_URL=pg_url)
    sides = ("taskgate", "celery", "taskiq", "taskiq-durable", "faststream", "faststream-durable")
    assert_measured(measured, {f"{side}.tasks_per_s" for side in sides})


@pytest.mark.timeout(TINY_TIMEOUT_S + 20)
def test_thumbnails_tiny_makes_thumbnails_on_both_sides(amqp_url: str) -> None:
    measured = run_tiny("thumbnails.py", amqp_url)
    assert_measured(measured, {"plain.images_per_s", "taskgate.images_per_s"})


@pytest.mark.timeout(TINY_TIMEOUT_S + 20)
def test_uploads_tiny_gets_202s_on_both_sides(amqp_url: str) -> None:
    measured = run_tiny("uploads.py", amqp_url)
    assert_measured(measured, {"seed_style.202s", "hand_written.202s", "taskgate.202s"})


@pytest.mark.timeout(TINY_TIMEOUT_S + 20)
def test_store_drivers_tiny_records_events_with_both_drivers(amqp_url: str, pg_url: str) -> None:
    measured = run_tiny("store_drivers.py", amqp_url, DATABASE_URL=pg_url)
    assert_measured(measured, {"asyncpg.events_per_s", "psycopg.events_per_s"})


def test_a_side_that_measured_nothing_fails_the_bench(capsys: pytest.CaptureFixture[str]) -> None:
    assert check_measured({"baseline.calls": 12, "taskgate.calls": 0}) == 1
    assert "taskgate.calls is 0" in capsys.readouterr().err
    assert check_measured({"baseline.calls": 12, "taskgate.calls": 3}) == 0


@pytest.mark.timeout(TINY_TIMEOUT_S + 20)
def test_scheduled_tiny_publishes_tasks_all_due_at_once(amqp_url: str) -> None:
    measured = run_tiny("scheduled.py", amqp_url)
    assert_measured(measured, {"relay.tasks_published", "relay.tasks_per_s"})


@pytest.mark.timeout(TINY_TIMEOUT_S + 20)
def test_task_control_tiny_lists_cancels_and_removes(amqp_url: str) -> None:
    measured = run_tiny("task_control.py", amqp_url)
    assert_measured(
        measured,
        {
            "list_first_page_ms",
            "list_deep_page_ms",
            "list_state_filter_ms",
            "list_admin_page_ms",
            "cancel_ms",
            "cancel_poll_ms",
            "retention_tasks_per_s",
        },
    )


@pytest.mark.timeout(TINY_TIMEOUT_S + 20)
def test_leases_tiny_renews_and_scans(amqp_url: str) -> None:
    measured = run_tiny("leases.py", amqp_url)
    assert_measured(measured, {"renew_ms.16", "scan_ms.100"})


@pytest.mark.timeout(TINY_TIMEOUT_S + 20)
def test_admin_tiny_reads_the_overview_and_history(amqp_url: str) -> None:
    assert_measured(run_tiny("admin.py", amqp_url), {"overview_ms", "history_ms"})
    measured = run_tiny("admin.py", amqp_url, options=["--record"])
    assert_measured(measured, {"record_per_s.without", "record_per_s.with"})


@pytest.mark.timeout(TINY_TIMEOUT_S + 20)
def test_storage_clients_tiny_stores_and_reads_with_each_installed_client(amqp_url: str) -> None:
    measured = run_tiny("storage_clients.py", amqp_url)
    # aiobotocore and miniopy-async are measured where someone installed them by hand.
    assert {"obstore.small_put_per_s", "boto3-thread.small_put_per_s"} <= set(measured)
    assert all(value > 0 for value in measured.values()), measured
