"""Files under STORAGE_DIR: input names, per-task output directories, outcome markers.

A task's outputs and its outcome marker live in ``STORAGE_DIR/<task_id>/``.
The marker (``.outcome.json``) is the terminal StatusEvent, written before the
event is published: a redelivered task whose marker exists republishes that
same event (same ``event_id``, which consumers deduplicate) instead of running
again, so a task's status stream has one terminal outcome.
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

from .errors import InvalidInput
from .messages import StatusEvent, encoder, event_decoder

OUTCOME_MARKER = ".outcome.json"


def atomic_write_bytes(path: Path, data: bytes, *, fsync: bool = False) -> None:
    """Write ``data`` to ``path`` so readers see the old file or the whole new one.

    Without ``fsync`` the write survives the process dying, not the machine.
    """
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        if fsync:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)


def resolve_input(storage_dir: Path, name: str) -> Path:
    """The file ``name`` names inside ``storage_dir``; InvalidInput if it points elsewhere."""
    if not name or "\x00" in name or name.startswith(("/", "\\")) or ".." in Path(name).parts:
        raise InvalidInput(f"file name {name!r} is not a relative path inside the storage")
    root = storage_dir.resolve()
    path = (root / name).resolve()
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


def load_outcome(storage_dir: Path, task_id: str) -> StatusEvent | None:
    """The recorded terminal event of ``task_id``, or None."""
    try:
        data = (storage_dir / task_id / OUTCOME_MARKER).read_bytes()
    except FileNotFoundError:
        return None
    try:
        return event_decoder.decode(data)
    except msgspec.DecodeError:
        # A torn marker cannot exist (atomic writes), but a hand-edited one can: run again.
        return None


def save_outcome(storage_dir: Path, event: StatusEvent) -> None:
    atomic_write_bytes(task_dir(storage_dir, event.task_id) / OUTCOME_MARKER, encoder.encode(event))
