"""The image pipeline's contract: the thumbnail task's payload and what an image must be.

The gateway checks an upload with :func:`probe` before it creates a task, and
the worker opens it with :func:`open_image` before it decodes: one rule, so a
file the gateway accepts is one the worker will try.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import IO, Annotated

import msgspec
from PIL import Image, UnidentifiedImageError

from .errors import InvalidInput

ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF")
# What Pillow raises on a truncated or corrupt file, besides its own errors.
DECODE_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    Image.DecompressionBombError,
)


class ThumbnailOptions(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    # None: WorkerSettings.thumbnail_sizes.
    sizes_px: list[Annotated[int, msgspec.Meta(ge=1, le=8192)]] | None = None
    quality: Annotated[int, msgspec.Meta(ge=1, le=95)] = 82
    watermark: Annotated[str, msgspec.Meta(max_length=200)] | None = None


class ThumbnailRequest(msgspec.Struct, frozen=True):
    """Payload of ``images.thumbnail``: a file name relative to STORAGE_DIR, and options."""

    file: str
    options: ThumbnailOptions = ThumbnailOptions()


@dataclass(frozen=True, slots=True)
class Probe:
    format: str
    width: int
    height: int
    mode: str


def probe(path: str | IO[bytes], max_pixels: int) -> Probe:
    """Check format and declared size from the header only, before any decoding."""
    with open_image(path, max_pixels) as img:
        return Probe(img.format or "?", img.width, img.height, img.mode)


def open_image(path: str | IO[bytes], max_pixels: int) -> Image.Image:
    """Open (header only) an image in an allowed format within ``max_pixels``; InvalidInput else."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(path, formats=ALLOWED_FORMATS)
    except UnidentifiedImageError:
        raise InvalidInput(
            f"not a readable image in an accepted format ({', '.join(ALLOWED_FORMATS)})"
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidInput(f"image too large (decompression bomb): {exc}") from None
    except DECODE_ERRORS as exc:
        raise InvalidInput(f"corrupt image header: {exc}") from None
    pixels = img.width * img.height
    if pixels > max_pixels:
        img.close()
        raise InvalidInput(
            f"image too large: {img.width}x{img.height} = {pixels} pixels, limit {max_pixels}"
        )
    return img
