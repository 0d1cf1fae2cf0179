"""The object store's interface, on the local directory and on a real S3 server (moto)."""

from __future__ import annotations

import io
import os

import pytest
from PIL import Image

from infra.storage import ObjectMissing, StorageConfig, open_storage

CHUNK = 64 * 1024


async def stream(storage, key: str, data: bytes) -> None:
    writer = storage.writer(key)
    for start in range(0, len(data), CHUNK):
        await writer.write(data[start : start + CHUNK])
    await writer.commit()


async def read_all(storage, key: str) -> bytes:
    stored = await storage.read(key)
    data = b"".join([chunk async for chunk in stored.chunks])
    assert stored.size == len(data)
    return data


async def test_a_streamed_file_appears_only_once_committed_and_reads_back_whole(storage):
    # Over two S3 parts (the fixture's part size is 5 MiB): a multipart upload.
    data = os.urandom(11 * 1024 * 1024 + 7)
    writer = storage.writer("task-1/source.bin")
    for start in range(0, len(data), CHUNK):
        await writer.write(data[start : start + CHUNK])
    assert not await storage.exists("task-1/source.bin")
    await writer.commit()

    assert await storage.exists("task-1/source.bin")
    assert await read_all(storage, "task-1/source.bin") == data


async def test_an_aborted_upload_leaves_nothing_behind_not_even_its_parts(
    storage, storage_leftovers
):
    writer = storage.writer("task-1/source.bin")
    for _ in range(7 * 1024 * 1024 // CHUNK):  # one part sent, the next begun
        await writer.write(os.urandom(CHUNK))
    await writer.abort()
    await writer.abort()  # twice is harmless

    assert await storage_leftovers() == []


async def test_outputs_are_stored_from_local_files_and_downloaded_back(storage, tmp_path):
    source = tmp_path / "made.webp"
    source.write_bytes(b"RIFF....WEBPVP8 " + os.urandom(1000))
    await storage.put_file("task-1/thumb-64.webp", source)
    copy = tmp_path / "copy.webp"
    await storage.download("task-1/thumb-64.webp", copy)

    assert copy.read_bytes() == source.read_bytes()


async def test_pillow_reads_a_stored_header_through_a_blocking_reader(storage):
    buffer = io.BytesIO()
    Image.new("RGB", (300, 200)).save(buffer, "PNG")
    await stream(storage, "task-1/source.png", buffer.getvalue())

    with storage.open_sync("task-1/source.png") as file, Image.open(file) as image:
        assert (image.format, image.size) == ("PNG", (300, 200))


async def test_deleting_a_task_removes_its_files_and_no_other(storage, storage_leftovers):
    for key in ("task-1/source.jpg", "task-1/thumb-64.jpg", "task-10/source.jpg"):
        await stream(storage, key, b"\xff\xd8\xff")
    await storage.delete_task("task-1")
    await storage.delete_task("no-such-task")

    assert await storage_leftovers() == ["task-10"]


async def test_a_missing_file_is_object_missing_on_every_read(storage, tmp_path):
    assert not await storage.exists("task-1/none.jpg")
    with pytest.raises(ObjectMissing):
        await storage.read("task-1/none.jpg")
    with pytest.raises(ObjectMissing):
        await storage.download("task-1/none.jpg", tmp_path / "none.jpg")
    with pytest.raises(ObjectMissing):
        storage.open_sync("task-1/none.jpg").read()


def test_a_storage_url_that_is_not_s3_is_refused_naming_the_variable(tmp_path):
    with pytest.raises(ValueError, match="STORAGE_URL must be s3://bucket/prefix"):
        open_storage(StorageConfig(url="ftp://files.example/x", local_dir=tmp_path))
    with pytest.raises(ValueError, match="STORAGE_URL"):
        open_storage(StorageConfig(url="s3://", local_dir=tmp_path))
