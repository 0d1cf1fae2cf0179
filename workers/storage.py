"""Files under STORAGE_DIR: input names and per-task output directories.

A task's outputs live in ``STORAGE_DIR/<task_id>/``; its outcome is recorded
in the outcome log (``workers/outcomes.py``).
"""

from __future__ import annotations

from pathlib import Path

from .errors import InvalidInput


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
