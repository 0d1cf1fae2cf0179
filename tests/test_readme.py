"""README.md's examples work as written: the quick start against real processes, the Python
examples (docs/examples/, shown verbatim in the README) against the test broker."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from .gateway.conftest import *  # noqa: F403  (the gateway, worker and rpc process fixtures)
from .gateway.conftest import ChildProcess, GatewayProcess

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
EXAMPLES = REPO / "docs" / "examples"
VENV_BIN = Path(sys.executable).parent


def shell_blocks_under(heading: str) -> list[str]:
    """The ```sh blocks of the README section that starts with ``heading``."""
    section = README.split(f"\n{heading}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, flags=re.S)


async def run(argv: list[str], *, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return await asyncio.to_thread(
        subprocess.run,
        argv,
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=90,
    )


@pytest.mark.parametrize("name", ["pricing.py", "reports.py"])
def test_the_readme_shows_each_python_example_as_it_is(name: str):
    assert f"```python\n{(EXAMPLES / name).read_text()}```" in README


async def test_the_python_examples_run(amqp_url: str, tmp_path: Path):
    env = {
        "AMQP_URL": amqp_url,
        "STORAGE_DIR": str(tmp_path),
        "DATABASE_PATH": str(tmp_path / "taskgate.db"),  # the worker's outcome log is there
        "WORKER_PROCESSES": "1",
    }

    pricing = await run([sys.executable, "pricing.py"], cwd=EXAMPLES, env=env)
    reports = await run([sys.executable, "reports.py"], cwd=EXAMPLES, env=env)

    assert pricing.returncode == 0, pricing.stderr
    assert pricing.stdout.splitlines() == ["{'total_cents': 500}", "OutOfStock: only 10 left"]
    assert reports.returncode == 0, reports.stderr
    assert reports.stdout.splitlines() == ["succeeded {'month': '2026-11', 'rows': 42}"]


async def test_the_quick_start_works_pasted_into_a_shell(
    gateway_process: Callable[..., GatewayProcess],
    worker_process: Callable[..., ChildProcess],
    rpc_process: ChildProcess,
    tmp_path: Path,
):
    gateway = gateway_process()
    worker_process(orders=True)
    await gateway.wait_ready()
    # What scripts/run sets up on a real machine: the signing key in var/, port 8000, .venv.
    secret_file = tmp_path / "secret_key"
    secret_file.write_text(gateway.settings.secret_key)
    script = shell_blocks_under("## Quick start")[1]
    script = (
        script.replace("var/secret_key", str(secret_file))
        .replace("http://127.0.0.1:8000", gateway.url)
        .replace(".venv/bin/", f"{VENV_BIN}/")
    )

    done = await run(
        ["bash", "-e", "-o", "pipefail", "-c", script],
        cwd=REPO,
        env={"TASKGATE_URL": gateway.url},  # the CLI's default is scripts/run's 127.0.0.1:8000
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert "event: succeeded" in done.stdout  # the upload's stream, to its end
    assert '"state":"succeeded"' in done.stdout  # GET /tasks/{id}
    assert '"total_cents":3490' in done.stdout  # the quote and the order
    assert '"order_id"' in done.stdout
    assert re.search(r"^succeeded +attempt 1$", done.stdout, flags=re.M)  # taskgate upload --watch
