"""The orphan sweeper: the files of uploads without a task go after the grace period."""

from __future__ import annotations

import os
import time
from pathlib import Path

from gateway.sweeper import OrphanSweeper
from gateway.task_store import DatabaseTaskStore
from infra.local_storage import LocalStorage
from infra.storage import Storage
from workers.messages import encoder, new_event

from ..helpers import eventually


def directory(root: Path, name: str, *, age_s: float) -> Path:
    path = root / name
    path.mkdir(parents=True)
    (path / "source.jpg").write_bytes(b"\xff\xd8")
    then = time.time() - age_s
    for changed in (path / "source.jpg", path):
        os.utime(changed, (then, then))
    return path


async def test_a_directory_without_a_task_is_removed_after_the_grace_period(database, tmp_path):
    store = await DatabaseTaskStore.open(database)
    queued = new_event("images.thumbnail", "task-1", "queued", 1)
    await store.record([(queued, encoder.encode(queued))], owner="ada")
    storage = tmp_path / "storage"
    orphan = directory(storage, "killed-mid-upload", age_s=120)
    task = directory(storage, "task-1", age_s=120)
    arriving = directory(storage, "still-arriving", age_s=120)
    os.utime(arriving / "source.jpg")  # a file still being written: changed just now
    young = directory(storage, "just-started", age_s=0)
    stray_file = storage / "not-a-directory"
    stray_file.write_bytes(b"")

    sweeper = OrphanSweeper(database, LocalStorage(storage), grace_s=60, interval_s=3600)
    removed = await sweeper.sweep()

    assert removed == ["killed-mid-upload"]
    assert not orphan.exists()
    assert task.exists() and arriving.exists() and young.exists() and stray_file.exists()
    assert await sweeper.sweep() == []


async def test_the_sweeper_runs_in_the_background_until_closed(database, tmp_path):
    await DatabaseTaskStore.open(database)
    storage = tmp_path / "storage"
    orphan = directory(storage, "orphan", age_s=120)
    sweeper = OrphanSweeper(database, LocalStorage(storage), grace_s=60, interval_s=0.05)
    sweeper.start()
    try:

        async def gone() -> bool:
            return not orphan.exists()

        await eventually(gone, timeout_s=30)
    finally:
        await sweeper.close()


async def store(storage: Storage, key: str) -> None:
    writer = storage.writer(key)
    await writer.write(b"\xff\xd8\xff")
    await writer.commit()


async def test_on_either_store_the_files_of_a_task_stay_and_an_orphans_go(
    database, storage, storage_leftovers
):
    tasks = await DatabaseTaskStore.open(database)
    queued = new_event("images.thumbnail", "task-1", "queued", 1)
    await tasks.record([(queued, encoder.encode(queued))], owner="ada")
    for key in ("task-1/source.jpg", "task-1/thumb-64.jpg", "orphan/source.jpg"):
        await store(storage, key)

    now = OrphanSweeper(database, storage, grace_s=60, interval_s=3600)
    later = OrphanSweeper(
        database, storage, grace_s=60, interval_s=3600, clock=lambda: time.time() + 120
    )

    assert await now.sweep() == []  # within the grace period: an upload may still commit
    assert await later.sweep() == ["orphan"]
    assert await storage_leftovers() == ["task-1"]
    assert await storage.exists("task-1/thumb-64.jpg")
