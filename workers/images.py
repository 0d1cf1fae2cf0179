"""Pillow work for the image pipeline: pure functions that run in the process pool.

Everything here takes and returns plain picklable values; errors a retry cannot
fix are raised as :class:`InvalidInput` (a PermanentError) with a clear reason.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, ImageOps

from .errors import InvalidInput
from .image_contracts import DECODE_ERRORS, Probe, open_image
from .pool import report_progress

OUTPUT_FORMATS = (("WEBP", "webp"), ("JPEG", "jpg"))


@dataclass(frozen=True, slots=True)
class Output:
    name: str  # file name inside the task's directory
    format: str
    size_px: int  # requested long edge
    width: int
    height: int
    bytes: int


@dataclass(frozen=True, slots=True)
class Rendering:
    source: Probe
    outputs: list[Output]


def render_thumbnails(
    path: str,
    out_dir: str,
    sizes_px: tuple[int, ...],
    max_pixels: int,
    quality: int = 82,
    watermark: str | None = None,
) -> Rendering:
    """Check the header, decode once, then write each size as WebP and JPEG into ``out_dir``.

    ``out_dir`` is created; every file is written atomically. Output names depend
    only on size and format, so a rerun overwrites instead of adding. Progress is
    reported after the decode and after each size but the last, whose end is the
    task's outcome.
    """
    sizes_px = tuple(sorted(set(sizes_px), reverse=True))
    os.makedirs(out_dir, exist_ok=True)
    with open_image(path, max_pixels) as img:
        source = Probe(img.format or "?", img.width, img.height, img.mode)
        if img.format == "JPEG":
            # DCT scaling: decode at the smallest scale still >= the largest thumbnail.
            img.draft("RGB", (sizes_px[0], sizes_px[0]))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                img.load()
                icc_profile = img.info.get("icc_profile")
                base = ImageOps.exif_transpose(img)
        except DECODE_ERRORS as exc:
            raise InvalidInput(f"corrupt or truncated {img.format} image: {exc}") from None
        except Image.DecompressionBombWarning as exc:
            raise InvalidInput(f"image too large: {exc}") from None
    if base.mode == "CMYK":
        icc_profile = None  # a CMYK profile would mislabel the converted RGB pixels
    has_alpha = base.mode in ("RGBA", "LA", "PA") or "transparency" in base.info
    base = base.convert("RGBA" if has_alpha else "RGB")
    steps = 1 + len(sizes_px)
    report_progress(round(100 / steps), f"decoded {source.format} {source.width}x{source.height}")

    outputs: list[Output] = []
    current = base
    for step, size_px in enumerate(sizes_px, start=2):
        # Each size is reduced from the previous one: cheaper, and quality holds at these ratios.
        current = current.copy()
        current.thumbnail((size_px, size_px), Image.Resampling.LANCZOS, reducing_gap=3.0)
        picture = _watermarked(current, watermark) if watermark else current
        for fmt, ext in OUTPUT_FORMATS:
            name = f"thumb-{size_px}.{ext}"
            image = picture
            if fmt == "JPEG" and image.mode == "RGBA":
                image = _flatten(image)
            data = _encode(image, fmt, quality, icc_profile)
            _atomic_write(Path(out_dir) / name, data)
            outputs.append(Output(name, fmt, size_px, image.width, image.height, len(data)))
        if step < steps:
            report_progress(round(100 * step / steps), f"wrote {size_px} px as WebP and JPEG")
    return Rendering(source, outputs)


def _encode(image: Image.Image, fmt: str, quality: int, icc_profile: bytes | None) -> bytes:
    buffer = io.BytesIO()
    options: dict[str, object] = {"quality": quality}
    if icc_profile:
        options["icc_profile"] = icc_profile
    if fmt == "JPEG":
        options["optimize"] = False
    else:
        options["method"] = 4
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _flatten(image: Image.Image) -> Image.Image:
    background = Image.new("RGB", image.size, (255, 255, 255))
    background.paste(image, mask=image.getchannel("A"))
    return background


def _watermarked(image: Image.Image, text: str) -> Image.Image:
    marked = image.copy()
    draw = ImageDraw.Draw(marked)
    font = ImageFont.load_default(size=max(8, marked.height // 16))
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    margin = max(2, marked.height // 50)
    position = (marked.width - (right - left) - margin, marked.height - (bottom - top) - margin)
    draw.text(position, text, font=font, fill="white", stroke_width=1, stroke_fill="black")
    return marked


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)
