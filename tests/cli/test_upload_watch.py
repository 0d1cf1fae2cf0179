"""``taskgate upload`` and ``taskgate watch`` against real gateway and worker processes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from gateway.tokens import mint
from infra.ports import free_port

from ..gateway.conftest import GatewayProcess, jpeg_bytes
from .conftest import finish, start_cli, taskgate

USER = "ada"
STATES = {"queued", "running", "retrying", "succeeded", "failed", "dead"}
READ_TIMEOUT_S = 30


def jpeg_file(tmp_path: Path) -> Path:
    path = tmp_path / "photo.jpg"
    path.write_bytes(jpeg_bytes(800, 600))
    return path


def gateway_env(gateway: GatewayProcess) -> dict[str, str]:
    """The CLI's environment for ``gateway``, signed in as USER."""
    token = mint(gateway.settings.secret_key, USER, ttl_s=3600)
    return {"TASKGATE_URL": gateway.url, "TASKGATE_TOKEN": token}


def states(stdout: str) -> list[str]:
    """The state of each status line, in order."""
    words = (line.split() for line in stdout.splitlines())
    return [first[0] for first in words if first and first[0] in STATES]


def task_id_of(upload_stdout: str) -> str:
    label, task_id = upload_stdout.splitlines()[0].split()
    assert label == "task", upload_stdout
    return task_id


def result_after_success(stdout: str) -> dict:
    """The result's JSON, printed after the ``succeeded`` line."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("succeeded"))
    return json.loads("\n".join(lines[start + 1 :]))


async def read_until(stream: asyncio.StreamReader, text: str) -> list[str]:
    """Lines of ``stream`` up to and including the first that contains ``text``."""
    lines: list[str] = []
    async with asyncio.timeout(READ_TIMEOUT_S):
        while True:
            line = (await stream.readline()).decode()
            assert line, f"the stream ended before {text!r}: {lines}"
            lines.append(line)
            if text in line:
                return lines


async def test_upload_watch_follows_the_task_to_success(tmp_path, gateway_process, worker_process):
    worker_process()
    gateway = gateway_process()
    await gateway.wait_ready()
    env = gateway_env(gateway)

    result = await taskgate("upload", str(jpeg_file(tmp_path)), "--watch", env=env)

    assert result.code == 0, result.stderr
    task_id = task_id_of(result.stdout)
    assert f"status  {gateway.url}/tasks/{task_id}\n" in result.stdout
    assert f"events  {gateway.url}/tasks/{task_id}/events\n" in result.stdout
    assert states(result.stdout) == ["queued", "running", "succeeded"]
    outputs = result_after_success(result.stdout)["outputs"]
    assert {(output["format"], output["size_px"]) for output in outputs} >= {("JPEG", 256)}
    # Off a terminal the bar is one line per update; success fills it.
    assert "[" + "#" * 30 + "] 100%" in result.stderr


async def test_upload_with_a_delay_and_a_priority_is_scheduled(tmp_path, gateway_process):
    gateway = gateway_process()
    await gateway.wait_ready()
    env = gateway_env(gateway)

    result = await taskgate(
        "upload", str(jpeg_file(tmp_path)), "--delay", "3600", "--priority", "high", env=env
    )

    assert result.code == 0, result.stderr
    async with gateway.client(USER) as client:
        status = (await client.get(f"/tasks/{task_id_of(result.stdout)}")).json()
    assert status["state"] == "scheduled"
    assert status["message"].startswith("due at ")


async def test_watch_of_a_finished_task(tmp_path, gateway_process, worker_process):
    worker_process()
    gateway = gateway_process()
    await gateway.wait_ready()
    env = gateway_env(gateway)
    task_id = task_id_of((await taskgate("upload", str(jpeg_file(tmp_path)), env=env)).stdout)
    first = await taskgate("watch", task_id, env=env)
    async with gateway.client(USER) as client:
        last_event_id = (await client.get(f"/tasks/{task_id}")).json()["last_event_id"]

    # From the start, the whole history is replayed.
    assert first.code == 0, first.stderr
    assert states(first.stdout) == ["queued", "running", "succeeded"]

    # After its last event the gateway answers 204: the final state comes from GET /tasks/ID.
    again = await taskgate("watch", task_id, "--after", str(last_event_id), env=env)

    assert again.code == 0, again.stderr
    assert states(again.stdout) == ["succeeded"]
    outputs = result_after_success(again.stdout)["outputs"]
    assert all(output["url"].startswith(f"/files/{task_id}/") for output in outputs)


async def test_watch_resumes_after_the_gateway_is_killed(
    tmp_path, gateway_settings, gateway_process, worker_process, kind_prefix
):
    worker_process()
    # The gated kind waits for a file per step, so the test decides when events happen.
    gated = {"upload_kind": f"{kind_prefix}.gated", "sse_retry_ms": 100}
    gateway = gateway_process(**gated)
    await gateway.wait_ready()
    env = gateway_env(gateway)
    task_id = task_id_of((await taskgate("upload", str(jpeg_file(tmp_path)), env=env)).stdout)
    task_dir = gateway_settings.storage_dir / task_id
    watch = await start_cli("watch", task_id, env=env)
    assert watch.stderr is not None
    try:
        (task_dir / "gate-1").touch()
        seen = await read_until(watch.stderr, "step 1")
        gateway.kill()
        restarted = gateway_process(port=gateway.port, **gated)
        await restarted.wait_ready()
        (task_dir / "gate-2").touch()
        (task_dir / "gate-3").touch()
    finally:
        result = await finish(watch)

    stderr = "".join(seen) + result.stderr
    assert result.code == 0, stderr
    assert states(result.stdout) == ["queued", "running", "succeeded"]
    for step in ("step 1", "step 2", "step 3"):
        assert stderr.count(step) == 1, stderr  # each event once: resumed, not replayed
    assert "reconnecting to resume after event" in stderr
    assert "reconnected" in stderr


async def test_watch_gives_up_when_the_gateway_stays_away(tmp_path, gateway_process):
    gateway = gateway_process(sse_retry_ms=100)  # no worker: the task stays queued
    await gateway.wait_ready()
    env = gateway_env(gateway)
    task_id = task_id_of((await taskgate("upload", str(jpeg_file(tmp_path)), env=env)).stdout)
    watch = await start_cli("watch", task_id, "--give-up-after", "1", env=env)
    assert watch.stdout is not None
    try:
        await read_until(watch.stdout, "queued")
        gateway.kill()
    finally:
        result = await finish(watch)

    assert result.code == 1
    assert "reconnecting to resume after event 1" in result.stderr
    assert "gave up after" in result.stderr


async def test_the_gateways_refusals_are_reported(tmp_path, gateway_process):
    gateway = gateway_process()
    await gateway.wait_ready()
    anonymous = {"TASKGATE_URL": gateway.url}

    no_token = await taskgate("upload", str(jpeg_file(tmp_path)), env=anonymous)
    assert no_token.code == 1
    assert "(HTTP 401)" in no_token.stderr
    assert "taskgate token USER" in no_token.stderr

    unknown = await taskgate("watch", "no-such-task", env=gateway_env(gateway))
    assert unknown.code == 1
    assert "(HTTP 404)" in unknown.stderr

    not_an_image = tmp_path / "notes.txt"
    not_an_image.write_text("hello")
    refused = await taskgate("upload", str(not_an_image), env=gateway_env(gateway))
    assert refused.code == 1
    assert "(HTTP 415)" in refused.stderr


async def test_watch_without_a_gateway_fails_at_once():
    url = f"http://127.0.0.1:{free_port()}"

    result = await taskgate("watch", "some-task", "--url", url)

    assert result.code == 1
    assert f"cannot follow the task at {url}" in result.stderr
    assert "cannot connect" in result.stderr


async def test_upload_of_a_missing_file_is_bad_usage(tmp_path):
    result = await taskgate("upload", str(tmp_path / "missing.jpg"))

    assert result.code == 2
    assert "no such file" in result.stderr
