"""The image pipeline: Pillow functions directly, and ``images.thumbnail`` through a worker."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from PIL import Image, ImageCms

from workers import InvalidInput, TaskRegistry
from workers.builtin import thumbnail
from workers.image_contracts import Probe, probe
from workers.images import render_thumbnails

from .conftest import get_dead_letters

TIMEOUT_S = 60
ORIENTATION_TAG = 0x0112


# Built once: a profile's bytes carry its creation time.
SRGB_PROFILE = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def write_jpeg(path: Path, size: tuple[int, int] = (400, 300), orientation: int = 1) -> bytes:
    """A JPEG with an sRGB profile and an EXIF orientation; returns its bytes."""
    image = Image.new("RGB", size, (200, 30, 30))
    image.paste((30, 30, 200), (0, 0, size[0] // 2, size[1] // 4))
    exif = Image.Exif()
    exif[ORIENTATION_TAG] = orientation
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90, exif=exif, icc_profile=SRGB_PROFILE)
    path.write_bytes(buffer.getvalue())
    return buffer.getvalue()


@pytest.fixture
def thumbnail_registry(kinds) -> tuple[str, TaskRegistry]:
    kind = kinds("thumbnail")
    registry = TaskRegistry()
    registry.task(kind)(thumbnail)
    return kind, registry


# -- the task through a worker ------------------------------------------------------------


async def test_thumbnail_task_writes_each_size_as_webp_and_jpeg_with_progress(
    thumbnail_registry, start_worker, submitter, settings, storage, tmp_path
):
    kind, registry = thumbnail_registry
    # Orientation 6: the camera was turned; upright the picture is 300 wide, 400 high.
    write_jpeg(tmp_path / "upload.jpg", (400, 300), orientation=6)
    await storage.put_file("uploads/upload.jpg", tmp_path / "upload.jpg")
    await start_worker(registry, thumbnail_sizes=(200, 64), progress_interval_s=0)

    task_id = await submitter.submit(kind, {"file": "uploads/upload.jpg"})
    events = [e async for e in submitter.events(task_id)]

    assert [e.state for e in events] == [
        "queued",
        "running",
        "progress",
        "progress",
        "succeeded",
    ]
    # One report per step from inside the pool job; the last step's end is "succeeded".
    assert [(e.percent, e.message) for e in events if e.state == "progress"] == [
        (33, "decoded JPEG 400x300"),
        (67, "wrote 200 px as WebP and JPEG"),
    ]
    result = events[-1].result
    assert result["source"] == {"format": "JPEG", "width": 400, "height": 300}
    outputs = {(o["format"], o["size_px"]): o for o in result["outputs"]}
    assert set(outputs) == {("WEBP", 200), ("JPEG", 200), ("WEBP", 64), ("JPEG", 64)}
    assert (outputs["JPEG", 200]["width"], outputs["JPEG", 200]["height"]) == (150, 200)
    for output in result["outputs"]:
        path = tmp_path / "output"
        assert output["path"].startswith(f"{task_id}/")
        await storage.download(output["path"], path)
        with Image.open(path) as image:
            assert image.format == output["format"]
            assert image.size == (output["width"], output["height"])
            assert image.info.get("icc_profile") == SRGB_PROFILE


@pytest.mark.parametrize(
    ("file", "content", "error"),
    [
        ("cut.jpg", "truncated-jpeg", "InvalidInput: corrupt or truncated JPEG image"),
        ("cut.png", "truncated-png", "InvalidInput: corrupt or truncated PNG image"),
        ("noise.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "InvalidInput: not a readable image"),
        ("text.jpg", b"hello, not an image", "InvalidInput: not a readable image in an"),
        ("pic.bmp", "bmp", "InvalidInput: not a readable image in an"),
        ("../outside.jpg", None, "InvalidInput: file name '../outside.jpg' is not a relative"),
        ("/etc/passwd", None, "InvalidInput: file name '/etc/passwd' is not a relative path"),
        ("missing.jpg", None, "InvalidInput: no stored file named 'missing.jpg'"),
    ],
)
async def test_bad_input_fails_permanently_with_a_clear_reason(
    thumbnail_registry, start_worker, submitter, settings, connection, file, content, error
):
    kind, registry = thumbnail_registry
    if content == "truncated-jpeg":
        data = write_jpeg(settings.storage_dir / file, (600, 400))
        (settings.storage_dir / file).write_bytes(data[: len(data) // 2])
    elif content == "truncated-png":
        noise = Image.frombytes("RGB", (200, 200), os.urandom(200 * 200 * 3))
        noise.save(settings.storage_dir / file)
        data = (settings.storage_dir / file).read_bytes()
        (settings.storage_dir / file).write_bytes(data[: len(data) // 2])
    elif content == "bmp":
        Image.new("RGB", (8, 8)).save(settings.storage_dir / file, "BMP")
    elif content is not None:
        (settings.storage_dir / file).write_bytes(content)
    await start_worker(registry)

    outcome = await submitter.submit_and_wait(kind, {"file": file}, timeout_s=TIMEOUT_S)

    assert outcome.state == "failed"
    assert outcome.error.startswith(error), outcome.error
    assert outcome.attempt == 1
    assert await get_dead_letters(connection, kind) == []


@pytest.mark.parametrize(
    ("file", "error"),
    [
        ("../outside.jpg", "InvalidInput: file name '../outside.jpg' is not a relative"),
        ("a/../../outside.jpg", "InvalidInput: file name 'a/../../outside.jpg' is not a relative"),
        ("task-1/missing.jpg", "InvalidInput: no stored file named 'task-1/missing.jpg'"),
    ],
)
async def test_a_name_outside_the_store_or_of_nothing_fails_permanently_on_either_store(
    thumbnail_registry, start_worker, submitter, storage_config, file, error
):
    kind, registry = thumbnail_registry
    await start_worker(registry)

    outcome = await submitter.submit_and_wait(kind, {"file": file}, timeout_s=TIMEOUT_S)

    assert (outcome.state, outcome.attempt) == ("failed", 1)
    assert outcome.error.startswith(error), outcome.error


async def test_decompression_bomb_fails_permanently_before_decoding(
    thumbnail_registry, start_worker, submitter, settings
):
    kind, registry = thumbnail_registry
    # 1 bit per pixel and all zeros: a few KB on disk, 400 megapixels when decoded.
    Image.new("1", (20_000, 20_000)).save(settings.storage_dir / "bomb.png")
    assert (settings.storage_dir / "bomb.png").stat().st_size < 100_000
    await start_worker(registry)

    outcome = await submitter.submit_and_wait(kind, {"file": "bomb.png"}, timeout_s=TIMEOUT_S)

    assert outcome.state == "failed"
    assert "image too large (decompression bomb)" in outcome.error


async def test_image_over_max_pixels_fails_with_the_limit_in_the_reason(
    thumbnail_registry, start_worker, submitter, settings
):
    kind, registry = thumbnail_registry
    Image.new("RGB", (200, 100)).save(settings.storage_dir / "big.png")
    await start_worker(registry, max_pixels=10_000)

    outcome = await submitter.submit_and_wait(kind, {"file": "big.png"}, timeout_s=TIMEOUT_S)

    assert (outcome.state, outcome.error) == (
        "failed",
        "InvalidInput: image too large: 200x100 = 20000 pixels, limit 10000",
    )


async def test_invalid_options_are_dead_lettered_as_schema_invalid(
    thumbnail_registry, start_worker, submitter, connection
):
    kind, registry = thumbnail_registry
    await start_worker(registry)

    outcome = await submitter.submit_and_wait(
        kind, {"file": "x.jpg", "options": {"quality": 500}}, timeout_s=TIMEOUT_S
    )

    assert outcome.state == "dead"
    assert "Expected `int` <= 95 - at `$.options.quality`" in outcome.error
    assert len(await get_dead_letters(connection, kind)) == 1


# -- the Pillow functions ---------------------------------------------------------------


def test_rerendering_overwrites_the_same_files_atomically(tmp_path):
    write_jpeg(tmp_path / "in.jpg", (300, 200))
    out = tmp_path / "out"
    out.mkdir()

    first = render_thumbnails(str(tmp_path / "in.jpg"), str(out), (100, 50), 10**6)
    second = render_thumbnails(str(tmp_path / "in.jpg"), str(out), (100, 50), 10**6)

    assert first == second
    assert sorted(p.name for p in out.iterdir()) == sorted(o.name for o in first.outputs)


def test_transparent_gif_keeps_alpha_in_webp_and_is_flattened_in_jpeg(tmp_path):
    image = Image.new("RGBA", (120, 60), (0, 0, 0, 0))
    image.paste((0, 128, 0, 255), (0, 0, 60, 60))
    image.save(tmp_path / "in.gif")

    rendering = render_thumbnails(str(tmp_path / "in.gif"), str(tmp_path), (60,), 10**6)

    with Image.open(tmp_path / "thumb-60.webp") as webp:
        assert webp.mode == "RGBA"
        assert webp.getpixel((50, 10))[3] == 0
    with Image.open(tmp_path / "thumb-60.jpg") as jpeg:
        assert jpeg.mode == "RGB"
        assert min(jpeg.getpixel((50, 10))) > 240  # white where it was transparent
    assert rendering.source == Probe("GIF", 120, 60, "P")
    assert [(o.width, o.height) for o in rendering.outputs] == [(60, 30), (60, 30)]


def test_watermark_changes_the_pixels_of_every_output(tmp_path):
    write_jpeg(tmp_path / "in.jpg", (300, 200))
    (tmp_path / "plain").mkdir()
    (tmp_path / "marked").mkdir()

    render_thumbnails(str(tmp_path / "in.jpg"), str(tmp_path / "plain"), (150,), 10**6)
    render_thumbnails(
        str(tmp_path / "in.jpg"), str(tmp_path / "marked"), (150,), 10**6, watermark="taskgate"
    )

    for name in ("thumb-150.webp", "thumb-150.jpg"):
        with (
            Image.open(tmp_path / "plain" / name) as a,
            Image.open(tmp_path / "marked" / name) as b,
        ):
            assert a.size == b.size
            assert a.tobytes() != b.tobytes()


def test_probe_reads_the_header_only_and_rejects_formats_off_the_allow_list(tmp_path):
    write_jpeg(tmp_path / "in.jpg", (40, 30))
    Image.new("RGB", (8, 8)).save(tmp_path / "in.tiff")

    assert probe(str(tmp_path / "in.jpg"), 10**6).format == "JPEG"
    with pytest.raises(InvalidInput, match="not a readable image in an accepted format"):
        probe(str(tmp_path / "in.tiff"), 10**6)
