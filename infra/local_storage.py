"""Object storage in a local directory: ``<dir>/<task_id>/<name>``, the default.

Several hosts share it only through a shared file system; ``STORAGE_URL=s3://``
is the way to run on many hosts. An object appears under its name only once
complete (written beside it, then renamed), as an S3 object does.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, BinaryIO

from .storage import ObjectMissing, ObjectWriter, Storage, StoredObject

_READ_CHUNK = 64 * 1024


class LocalStorage(Storage):
    def __init__(self, root: Path) -> None:
        self.root = root

    def local_path(self, key: str) -> Path:
        return self.root / key

    def writer(self, key: str) -> ObjectWriter:
        return _LocalWriter(self.root / key)

    async def put_file(self, key: str, path: Path) -> None:
        target = self.root / key
        if path != target:
            await asyncio.to_thread(_copy_atomically, path, target)

    async def read(self, key: str) -> StoredObject:
        path = self.root / key
        try:
            file = await asyncio.to_thread(open, path, "rb")
        except FileNotFoundError:
            raise ObjectMissing(f"no stored object {key!r}") from None
        return StoredObject(os.fstat(file.fileno()).st_size, _chunks(file))

    async def download(self, key: str, path: Path) -> None:
        try:
            await asyncio.to_thread(shutil.copyfile, self.root / key, path)
        except FileNotFoundError:
            raise ObjectMissing(f"no stored object {key!r}") from None

    def open_sync(self, key: str) -> IO[bytes]:
        try:
            return open(self.root / key, "rb")
        except FileNotFoundError:
            raise ObjectMissing(f"no stored object {key!r}") from None

    async def exists(self, key: str) -> bool:
        return (self.root / key).is_file()

    async def delete_task(self, task_id: str) -> None:
        await asyncio.to_thread(shutil.rmtree, self.root / task_id, True)

    async def task_last_changes(self) -> dict[str, float]:
        return await asyncio.to_thread(self._last_changes)

    def _last_changes(self) -> dict[str, float]:
        if not self.root.is_dir():
            return {}
        changes = {}
        for entry in self.root.iterdir():
            try:
                if entry.is_dir():
                    # A file being written changes its own mtime, not its directory's.
                    changes[entry.name] = max(
                        [entry.stat().st_mtime, *(p.stat().st_mtime for p in entry.iterdir())]
                    )
            except FileNotFoundError:  # removed while we looked
                continue
        return changes


class _LocalWriter(ObjectWriter):
    """Writes ``.<name>.part-<random>`` beside the target, renamed over it on commit."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._part = path.with_name(f".{path.name}.part-{secrets.token_hex(4)}")
        self._file: BinaryIO | None = None

    async def write(self, data: bytes) -> None:
        if self._file is None:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self._part, "wb")  # noqa: ASYNC230 - see below
        # Page-cache writes of one chunk: cheaper than a thread hop.
        self._file.write(data)

    async def commit(self) -> None:
        if self._file is None:  # an empty object
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self._part, "wb")  # noqa: ASYNC230
        self._file.close()
        os.replace(self._part, self._path)

    async def abort(self) -> None:
        if self._file is not None and not self._file.closed:
            self._file.close()
            self._part.unlink(missing_ok=True)
            with contextlib.suppress(OSError):  # the task's directory, if nothing else is there
                self._path.parent.rmdir()


async def _chunks(file: BinaryIO) -> AsyncIterator[bytes]:
    try:
        while chunk := await asyncio.to_thread(file.read, _READ_CHUNK):
            yield chunk
    finally:
        file.close()


def _copy_atomically(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(f".{target.name}.part-{secrets.token_hex(4)}")
    shutil.copyfile(source, part)
    os.replace(part, target)
