"""Object storage: where uploads and task outputs live, a local directory or an S3 bucket.

Every stored file has a key ``<task_id>/<name>``; one task's files share the
prefix ``<task_id>/``. The web process writes uploads and serves outputs, the
workers read uploads and write outputs, the orphan sweeper and retention
delete a task's files: all through :class:`Storage`, whichever backend
``STORAGE_URL`` names (see ``open_storage``).

Errors::

    StorageError            the store failed (unreachable, refused, ...)
    └── ObjectMissing       no object under that key (also a FileNotFoundError)
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit


class StorageError(Exception):
    """The object store failed; the message says what was asked and why it failed."""


class ObjectMissing(StorageError, FileNotFoundError):
    """No object is stored under the key."""


@dataclass(frozen=True)
class StorageConfig:
    """What ``open_storage`` needs: the URL, and the S3 endpoint and credentials if it is S3."""

    # Unset: the local directory ``local_dir``; ``s3://bucket/prefix``: an S3 bucket.
    url: str = ""
    local_dir: Path = Path("./var/storage")
    # Unset: AWS's own endpoint for the region.
    endpoint_url: str = ""
    region: str = "us-east-1"
    # Unset: the environment's own credentials (AWS_* variables, instance profile...).
    access_key_id: str = ""
    secret_access_key: str = ""
    # Size of one part of a multipart upload: what one upload holds in memory at most
    # (twice, while a part is sent). S3 accepts no part under 5 MiB but the last.
    part_bytes: int = 8 * 1024 * 1024

    def __repr__(self) -> str:  # never show the secret
        return f"StorageConfig(url={self.url!r}, local_dir={str(self.local_dir)!r})"

    @property
    def is_local(self) -> bool:
        return not self.url


class ObjectWriter(abc.ABC):
    """A file being stored: chunks go out as they come; visible under its key only on commit."""

    @abc.abstractmethod
    async def write(self, data: bytes) -> None: ...

    @abc.abstractmethod
    async def commit(self) -> None:
        """Make the object visible under its key (the whole of it, never a part)."""

    @abc.abstractmethod
    async def abort(self) -> None:
        """Drop what was written; nothing stays behind. Safe to call after commit (no-op)."""


@dataclass
class StoredObject:
    """An object being read: its size, then its bytes chunk by chunk."""

    size: int
    chunks: AsyncIterator[bytes]


class Storage(abc.ABC):
    """One backend of object storage; keys are ``<task_id>/<name>``."""

    @abc.abstractmethod
    def local_path(self, key: str) -> Path | None:
        """The file holding ``key`` if this store is a local directory (read it directly), else
        None."""

    @abc.abstractmethod
    def writer(self, key: str) -> ObjectWriter:
        """Store a file streamed in chunks (an upload): ``write``…, then ``commit`` or ``abort``."""

    @abc.abstractmethod
    async def put_file(self, key: str, path: Path) -> None:
        """Store the local file ``path`` under ``key`` (a task's output)."""

    @abc.abstractmethod
    async def read(self, key: str) -> StoredObject:
        """Stream the object ``key``; ObjectMissing if there is none."""

    @abc.abstractmethod
    async def download(self, key: str, path: Path) -> None:
        """Copy the object ``key`` into the local file ``path``; ObjectMissing if there is none."""

    @abc.abstractmethod
    def open_sync(self, key: str) -> IO[bytes]:
        """A seekable, blocking reader of ``key`` (for Pillow in a thread); reads what it needs."""

    @abc.abstractmethod
    async def exists(self, key: str) -> bool: ...

    @abc.abstractmethod
    async def delete_task(self, task_id: str) -> None:
        """Remove every object of the task (``<task_id>/…``); nothing to remove is no error."""

    @abc.abstractmethod
    async def task_last_changes(self) -> dict[str, float]:
        """Each task prefix in the store and the newest change under it (epoch seconds)."""

    async def close(self) -> None:  # noqa: B027 - most backends hold nothing to release
        """Release connections; the store is not used after."""


def open_storage(config: StorageConfig) -> Storage:
    """The backend ``config.url`` names: unset, the local directory; ``s3://bucket/prefix``."""
    if config.is_local:
        from .local_storage import LocalStorage

        return LocalStorage(config.local_dir)
    parts = urlsplit(config.url)
    if parts.scheme != "s3" or not parts.netloc:
        raise ValueError(
            f"STORAGE_URL must be s3://bucket/prefix (or unset: STORAGE_DIR), not {config.url!r}"
        )
    from .s3_storage import S3Storage

    return S3Storage(config, bucket=parts.netloc, prefix=parts.path.strip("/"))
