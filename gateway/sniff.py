"""What an uploaded file really is, from its bytes, whatever the client claims.

Two checks: the first bytes against the signatures of the accepted formats, as
they stream in (so a video is refused at its first chunk, not after 20 MB), and
then Pillow reading the complete file's header (format, declared size against
the pixel limit) before a task is created for it.
"""

from __future__ import annotations

import asyncio
from typing import IO

from infra.storage import Storage
from workers.errors import InvalidInput
from workers.image_contracts import ALLOWED_FORMATS, Probe, probe

from .errors import HttpError

# Accepted formats (the worker's allow-list) and the extension a stored file gets.
EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "GIF": "gif", "WEBP": "webp"}
assert set(EXTENSIONS) == set(ALLOWED_FORMATS)

_SIGNATURES = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
)


def sniff_format(head: bytes) -> str:
    """The image format the first bytes announce; HttpError 415 for anything else."""
    for signature, fmt in _SIGNATURES:
        if head.startswith(signature):
            return fmt
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    accepted = ", ".join(EXTENSIONS)
    raise HttpError(
        415, "unsupported_media_type", f"not an image in an accepted format ({accepted})"
    )


async def probe_stored(storage: Storage, key: str, max_pixels: int) -> Probe:
    """Pillow's view of the stored file's header; HttpError 422 if it is corrupt or too large.

    It reads the header only (no pixels). A local file is read on the event loop:
    a thread hop costs more than the read. From S3 the header comes by ranged
    reads, which block: in a thread.
    """
    path = storage.local_path(key)
    if path is not None:
        return _probe(path.open("rb"), max_pixels)
    return await asyncio.to_thread(lambda: _probe(storage.open_sync(key), max_pixels))


def _probe(file: IO[bytes], max_pixels: int) -> Probe:
    with file:
        try:
            return probe(file, max_pixels)
        except InvalidInput as exc:
            raise HttpError(422, "invalid_image", str(exc)) from None
