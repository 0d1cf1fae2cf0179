"""A task's files in the store: its input as a local file, its outputs from a local directory.

Keys are ``<task_id>/<name>`` (``infra/storage.py``). Pillow and other code
in the process pool read and write local files: with the local store those are
the stored files themselves (no copy); with S3 the input is downloaded into a
temporary directory and the outputs written there are uploaded under the
task's prefix once the handler's block ends without an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path, PurePosixPath

from infra.storage import ObjectMissing, Storage

from .errors import InvalidInput


def input_key(name: str) -> str:
    """``name`` as a key inside the store; InvalidInput if it points elsewhere."""
    parts = PurePosixPath(name).parts
    if (
        not name
        or "\x00" in name
        or "\\" in name
        or name.startswith("/")
        or ".." in parts
        or not parts
    ):
        raise InvalidInput(f"file name {name!r} is not a relative path inside the storage")
    return "/".join(parts)


def resolve_input(storage_dir: Path, name: str) -> Path:
    """The file ``name`` names inside ``storage_dir``; InvalidInput if it points elsewhere."""
    root = storage_dir.resolve()
    path = (root / input_key(name)).resolve()  # a symlink may still lead out
    if not path.is_relative_to(root) or path == root:
        raise InvalidInput(f"file name {name!r} points outside the storage")
    if not path.is_file():
        raise InvalidInput(f"no stored file named {name!r}")
    return path


def task_dir(storage_dir: Path, task_id: str) -> Path:
    """``STORAGE_DIR/<task_id>/``, created; task ids are validated plain names."""
    path = storage_dir / task_id
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.asynccontextmanager
async def local_input(storage: Storage, storage_dir: Path, name: str) -> AsyncIterator[Path]:
    """The stored file ``name`` as a local file for the block; InvalidInput if there is none."""
    key = input_key(name)
    if storage.local_path(key) is not None:
        yield resolve_input(storage_dir, key)
        return
    with tempfile.TemporaryDirectory(prefix="taskgate-input-") as tmp:
        path = Path(tmp) / PurePosixPath(key).name
        try:
            await storage.download(key, path)
        except ObjectMissing:
            raise InvalidInput(f"no stored file named {name!r}") from None
        yield path


@contextlib.asynccontextmanager
async def local_outputs(storage: Storage, task_id: str) -> AsyncIterator[Path]:
    """A local directory for the task's outputs; its files are stored under ``<task_id>/``.

    The directory need not exist yet (code in the pool may create it). With the
    local store it is the task's own directory; otherwise its files are uploaded
    when the block ends well, and removed in any case.
    """
    own = storage.local_path(f"{task_id}/x")
    if own is not None:
        yield own.parent
        return
    tmp = Path(tempfile.mkdtemp(prefix="taskgate-outputs-"))
    try:
        out_dir = tmp / task_id
        yield out_dir
        if out_dir.is_dir():
            await asyncio.gather(
                *(
                    storage.put_file(f"{task_id}/{path.name}", path)
                    for path in sorted(out_dir.iterdir())
                    if path.is_file() and not path.name.startswith(".")
                )
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
