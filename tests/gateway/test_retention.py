"""Retention: finished tasks past TASK_RETENTION_S go with their events, files, upload key and
the workers' records; unfinished and recent ones stay; a removed task is 404."""

from __future__ import annotations

import time
from dataclasses import replace

import msgspec

from gateway import task_inputs
from gateway.idempotency import UPLOAD_KEY_MIGRATIONS
from gateway.retention import Retention
from gateway.task_store import DatabaseTaskStore
from infra.local_storage import LocalStorage
from workers import task_records
from workers.messages import encoder, new_event

from ..helpers import eventually
from .conftest import jpeg_bytes, running_app, upload

DAY_S = 24 * 3600.0


async def add_task(store: DatabaseTaskStore, task_id: str, states: list[str], age_s: float) -> None:
    then = time.time() - age_s
    events = []
    for state in states:
        made = msgspec.structs.replace(new_event("k", task_id, state, 1), timestamp=then)
        events.append((made, encoder.encode(made)))
    await store.record(events, owner="ada")


async def count(database, sql: str, *args: object) -> int:
    return int(await database.read(lambda tx: tx.fetchval(sql, *args)))


async def test_finished_tasks_past_the_retention_go_with_all_they_kept(database, tmp_path):
    store = await DatabaseTaskStore.open(database)
    await task_records.migrate(database)
    await database.migrate("upload_keys", UPLOAD_KEY_MIGRATIONS)
    await database.migrate(task_inputs.COMPONENT, task_inputs.MIGRATIONS)
    storage = tmp_path / "storage"
    old_finished = ["done", "failed", "cancelled"]
    await add_task(store, "done", ["queued", "running", "succeeded"], 3 * DAY_S)
    await add_task(store, "failed", ["queued", "failed"], 3 * DAY_S)
    await add_task(store, "cancelled", ["queued", "cancelled"], 3 * DAY_S)
    await add_task(store, "old-running", ["queued", "running"], 3 * DAY_S)
    await add_task(store, "recent", ["queued", "succeeded"], 60)
    for task_id in [*old_finished, "old-running", "recent"]:
        (storage / task_id).mkdir(parents=True)
        (storage / task_id / "out.jpg").write_bytes(b"x")

    async def worker_records(tx):
        for task_id in [*old_finished, "recent"]:
            await tx.execute(
                "INSERT INTO task_outcomes (task_id, event) VALUES ($1, $2)", task_id, b"{}"
            )
            await tx.execute(
                "INSERT INTO task_cancels (task_id, requested_at) VALUES ($1, 0)", task_id
            )
            await tx.execute(
                "INSERT INTO worker_claims (scope, item_id, holder, until_s)"
                " VALUES ('task', $1, 'w', 0)",
                task_id,
            )
            await tx.execute(
                "INSERT INTO upload_keys (scoped_key, request_hash, task_id, created_at)"
                " VALUES ($1, 'h', $1, 0)",
                task_id,
            )

    await database.write(worker_records)

    retention = Retention(database, LocalStorage(storage), retention_s=DAY_S, batch=2)
    assert await retention.sweep() == 3  # two batches

    for task_id in old_finished:
        assert await store.get_task(task_id) is None
        assert not (storage / task_id).exists()
    for table, column in [
        ("events", "task_id"),
        ("task_outcomes", "task_id"),
        ("task_cancels", "task_id"),
        ("worker_claims", "item_id"),
        ("upload_keys", "task_id"),
    ]:
        left = await count(
            database, f"SELECT count(*) FROM {table} WHERE {column} IN ($1, $2, $3)", *old_finished
        )
        assert left == 0, table
    assert (await store.get_task("old-running")).state == "running"
    assert (await store.get_task("recent")).state == "succeeded"
    assert (storage / "old-running").exists() and (storage / "recent").exists()
    assert await count(database, "SELECT count(*) FROM task_outcomes WHERE task_id = 'recent'")
    assert await retention.sweep() == 0


async def test_the_gateway_sweeper_removes_a_finished_task_and_it_is_404(
    gateway_settings, storage_leftovers
):
    settings = replace(gateway_settings, task_retention_s=0.0, orphan_sweep_s=0.05)
    async with running_app(settings) as client:
        task_id = (await upload(client, jpeg_bytes(64, 48))).json()["task_id"]
        assert await storage_leftovers() == [task_id]
        assert (await client.delete(f"/tasks/{task_id}")).status_code == 200

        async def removed() -> bool:
            return (await client.get(f"/tasks/{task_id}")).status_code == 404

        await eventually(removed, timeout_s=30, interval_s=0.05)
        events = await client.get(f"/tasks/{task_id}/events")
        assert events.status_code == 404
        assert events.json()["error"]["code"] == "not_found"

        async def files_removed() -> bool:  # after the rows' commit
            return await storage_leftovers() == []

        await eventually(files_removed, timeout_s=30, interval_s=0.05)
