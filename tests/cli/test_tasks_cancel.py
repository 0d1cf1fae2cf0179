"""``taskgate tasks``, ``cancel`` and ``retry`` against a real gateway process."""

from __future__ import annotations

import json

from gateway.tokens import mint

from ..gateway.conftest import jpeg_bytes, upload
from .conftest import taskgate


async def test_tasks_lists_and_cancel_cancels_then_refuses_a_finished_task(gateway_process):
    gateway = gateway_process()
    await gateway.wait_ready()
    async with gateway.client() as client:
        task_ids = [(await upload(client, jpeg_bytes(64, 48))).json()["task_id"] for _ in range(3)]
    token = mint(gateway.settings.secret_key, "ada", ttl_s=3600)
    env = {"TASKGATE_URL": gateway.url, "TASKGATE_TOKEN": token}

    listed = await taskgate("tasks", "--limit", "2", env=env)
    assert listed.code == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["TASK", "KIND", "STATE", "PERCENT", "CREATED"]
    assert [line.split()[0] for line in lines[1:]] == task_ids[::-1][:2]

    cancelled = await taskgate("cancel", task_ids[0], env=env)
    assert cancelled.code == 0, cancelled.stderr
    assert cancelled.stdout.split() == [task_ids[0], "cancelled"]

    again = await taskgate("cancel", task_ids[0], env=env)
    assert again.code == 1
    assert "already ended cancelled" in again.stderr and "409" in again.stderr

    only = await taskgate("tasks", "--state", "cancelled", "--json", env=env)
    assert only.code == 0, only.stderr
    assert [task["task_id"] for task in json.loads(only.stdout)] == [task_ids[0]]

    bad = await taskgate("tasks", "--state", "asleep", env=env)
    assert bad.code == 1
    assert "state: one of" in bad.stderr and "400" in bad.stderr


async def test_retry_runs_a_cancelled_task_again_as_a_new_one(gateway_process):
    gateway = gateway_process()
    await gateway.wait_ready()
    async with gateway.client() as client:
        task_id = (await upload(client, jpeg_bytes(64, 48))).json()["task_id"]
    env = {
        "TASKGATE_URL": gateway.url,
        "TASKGATE_TOKEN": mint(gateway.settings.secret_key, "ada", ttl_s=3600),
    }

    queued = await taskgate("retry", task_id, env=env)  # no worker: it is still queued
    await taskgate("cancel", task_id, env=env)
    retried = await taskgate("retry", task_id, env=env)
    again = await taskgate("retry", task_id, env=env)

    assert queued.code == 1
    assert "409" in queued.stderr and "queued" in queued.stderr
    assert retried.code == 0, retried.stderr
    new_id = retried.stdout.strip()
    assert new_id != task_id
    assert again.stdout.strip() == new_id
    async with gateway.client() as client:
        assert (await client.get(f"/tasks/{new_id}")).json()["state"] == "queued"
