"""Object storage in an S3-compatible bucket (``STORAGE_URL=s3://bucket/prefix``), via obstore.

obstore (Python bindings of the Rust ``object_store`` crate, used by Apache
Arrow and DataFusion) was measured against aiobotocore, miniopy-async and
boto3 in a thread (bench/storage_clients.py, docs/benchmarks.md); it needs no
aiohttp/botocore stack, signs and streams off the event loop in its own Rust
threads, and aborts a multipart upload whose input fails, so a cut upload
leaves no parts behind.

An upload is streamed: ``put_async`` reads the chunks of a bounded queue as the
request brings them and sends them as a multipart upload, ``part_bytes`` at a
time (a single PUT for a smaller file). One upload holds at most about two
parts in memory, never the file.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import IO, Any

import obstore
from obstore.exceptions import BaseError as ObstoreError
from obstore.store import S3Store

from .storage import ObjectMissing, ObjectWriter, Storage, StorageConfig, StorageError, StoredObject

_READ_CHUNK = 64 * 1024
# Chunks of an upload waiting for obstore; each is one piece of the request body (~64 KiB).
_QUEUED_CHUNKS = 16
# Parts of one upload in flight at once: memory is (this + 1) x part_bytes at most.
_PARTS_IN_FLIGHT = 1
_DELETE_BATCH = 1_000


class S3Storage(Storage):
    def __init__(self, config: StorageConfig, *, bucket: str, prefix: str) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self._part_bytes = max(config.part_bytes, 5 * 1024 * 1024)
        options: dict[str, Any] = {"region": config.region}
        if config.endpoint_url:
            # Path-style requests: what MinIO, Ceph, Garage and the like answer.
            options["endpoint"] = config.endpoint_url
            options["virtual_hosted_style_request"] = False
        if config.access_key_id:
            options["access_key_id"] = config.access_key_id
            options["secret_access_key"] = config.secret_access_key
        self._store = S3Store(
            bucket,
            prefix=prefix or None,
            client_options={
                "allow_http": config.endpoint_url.startswith("http://"),
                "connect_timeout": timedelta(seconds=5),
                "timeout": timedelta(seconds=60),
            },
            # A request waits for a failing store 10 s at most, then the caller sees it.
            retry_config={"max_retries": 3, "retry_timeout": timedelta(seconds=10)},
            **options,
        )

    def __repr__(self) -> str:
        return f"S3Storage(bucket={self.bucket!r}, prefix={self.prefix!r})"

    def local_path(self, key: str) -> None:
        return None

    def writer(self, key: str) -> ObjectWriter:
        return _S3Writer(self._store, key, self._part_bytes)

    async def put_file(self, key: str, path: Path) -> None:
        with _translated(f"store {key!r}"):
            await obstore.put_async(
                self._store, key, path, chunk_size=self._part_bytes, max_concurrency=2
            )

    async def read(self, key: str) -> StoredObject:
        with _translated(f"read {key!r}"):
            result = await obstore.get_async(self._store, key)
        return StoredObject(result.meta["size"], _chunks(result.stream(_READ_CHUNK), key))

    async def download(self, key: str, path: Path) -> None:
        stored = await self.read(key)
        with open(path, "wb") as file:  # noqa: ASYNC230 - page-cache writes of one chunk
            async for chunk in stored.chunks:
                file.write(chunk)

    def open_sync(self, key: str) -> IO[bytes]:
        with _translated(f"open {key!r}"):
            reader = obstore.open_reader(self._store, key, buffer_size=256 * 1024)
        return io.BufferedReader(_RawReader(reader), buffer_size=64 * 1024)

    async def exists(self, key: str) -> bool:
        try:
            with _translated(f"look up {key!r}"):
                await obstore.head_async(self._store, key)
        except ObjectMissing:
            return False
        return True

    async def delete_task(self, task_id: str) -> None:
        with _translated(f"delete the objects of {task_id!r}"):
            async for batch in obstore.list(self._store, task_id, chunk_size=_DELETE_BATCH):
                await obstore.delete_async(self._store, [meta["path"] for meta in batch])

    async def task_last_changes(self) -> dict[str, float]:
        changes: dict[str, float] = {}
        with _translated("list the stored objects"):
            async for batch in obstore.list(self._store, None, chunk_size=_DELETE_BATCH):
                for meta in batch:
                    task_id, _, name = meta["path"].partition("/")
                    if name:
                        changed = meta["last_modified"].timestamp()
                        changes[task_id] = max(changes.get(task_id, 0.0), changed)
        return changes


class _Abort(Exception):
    """Raised into obstore's input so that it aborts the multipart upload."""


_END = object()
_ABORT = object()


class _S3Writer(ObjectWriter):
    """Feeds ``put_async`` from a bounded queue; the object exists only once it completes.

    The first part is kept until it is full: a file smaller than a part is one PUT
    (a multipart upload would cost the store three requests).
    """

    def __init__(self, store: S3Store, key: str, part_bytes: int) -> None:
        self._store = store
        self._key = key
        self._part_bytes = part_bytes
        self._head: bytearray | None = bytearray()
        self._queue: asyncio.Queue[object] = asyncio.Queue(_QUEUED_CHUNKS)
        self._upload: asyncio.Task[Any] | None = None
        self._done = False

    async def write(self, data: bytes) -> None:
        if self._head is None:
            await self._send(data)
            return
        self._head += data
        if len(self._head) >= self._part_bytes:
            head, self._head = self._head, None
            await self._send(head)  # no copy: nothing writes to it after this

    async def commit(self) -> None:
        self._done = True
        if self._head is not None:
            with _translated(f"store {self._key!r}"):
                await obstore.put_async(self._store, self._key, self._head, use_multipart=False)
            return
        await self._send(_END)
        assert self._upload is not None
        with _translated(f"store {self._key!r}"):
            await self._upload

    async def abort(self) -> None:
        self._head = None
        if self._done or self._upload is None:
            return
        self._done = True
        while not self._queue.empty():  # make room: obstore may be stuck on a slow store
            self._queue.get_nowait()
        self._queue.put_nowait(_ABORT)
        with contextlib.suppress(_Abort, ObstoreError, OSError):
            await self._upload

    async def _send(self, item: object) -> None:
        if self._upload is None:
            self._upload = asyncio.ensure_future(
                obstore.put_async(
                    self._store,
                    self._key,
                    self._items(),
                    chunk_size=self._part_bytes,
                    max_concurrency=_PARTS_IN_FLIGHT,
                )
            )
        if not self._queue.full():
            self._queue.put_nowait(item)
            return
        # Wait for room, unless the upload fails meanwhile (it would never take the item).
        room = asyncio.ensure_future(self._queue.put(item))
        await asyncio.wait({room, self._upload}, return_when=asyncio.FIRST_COMPLETED)
        if not room.done():
            room.cancel()
            with _translated(f"store {self._key!r}"):
                self._upload.result()
            raise StorageError(f"the upload of {self._key!r} ended early")

    async def _items(self) -> AsyncIterator[bytes | bytearray]:
        while True:
            item = await self._queue.get()
            if item is _END:
                return
            if item is _ABORT:
                raise _Abort(self._key)
            assert isinstance(item, bytes | bytearray)
            yield item


class _RawReader(io.RawIOBase):
    """obstore's blocking ReadableFile as a file object Pillow reads (``bytes``, not Bytes)."""

    def __init__(self, reader: Any) -> None:
        self._reader = reader

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        with _translated("read"):
            data = self._reader.read(len(buffer))
        size = len(data)
        memoryview(buffer)[:size] = memoryview(data)
        return size

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return int(self._reader.seek(offset, whence))

    def tell(self) -> int:
        return int(self._reader.tell())

    def close(self) -> None:
        self._reader.close()
        super().close()


async def _chunks(stream: Any, key: str) -> AsyncIterator[bytes]:
    with _translated(f"read {key!r}"):
        async for chunk in stream:
            yield bytes(chunk)


@contextlib.contextmanager
def _translated(what: str) -> Iterator[None]:
    """obstore's errors as ours: ObjectMissing for a missing key, StorageError for the rest."""
    try:
        yield
    except FileNotFoundError as exc:
        raise ObjectMissing(f"cannot {what}: no such object") from exc
    except (ObstoreError, OSError) as exc:
        raise StorageError(f"cannot {what}: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    return str(exc).split("\n", 1)[0][:300]
