"""Benchmark: thumbnails/s through broker + worker vs a plain Pillow loop, same process count.

Both sides get the same JPEG photos and make the same outputs (long edge 800,
256 and 64 px, each as WebP and JPEG). The baseline is a ProcessPoolExecutor
running a straightforward Pillow function; taskgate is ``python -m workers``
with ``WORKER_PROCESSES`` equal to that pool, fed by ``TaskSubmitter``.

    python bench/thumbnails.py                      # starts a private broker
    AMQP_URL=amqp://... python bench/thumbnails.py  # uses that broker
    python bench/thumbnails.py --images 60 --processes 2
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from PIL import Image, ImageDraw, ImageOps  # noqa: E402

from rpc.connection import connect_wire  # noqa: E402
from rpc.node import BrokerNode, NodeConfig  # noqa: E402
from workers import TaskSubmitter  # noqa: E402
from workers.topology import TERMINAL_BINDING_KEYS, dead_queue, task_queue  # noqa: E402

SIZES_PX = (800, 256, 64)
KIND = "images.thumbnail"


def make_photo(path: Path, seed: int, size: tuple[int, int] = (2400, 1600)) -> None:
    """A photo-like JPEG: gradients, shapes and fine noise (so it does not compress to nothing)."""
    width, height = size
    image = Image.linear_gradient("L").resize(size).convert("RGB")
    draw = ImageDraw.Draw(image)
    for i in range(40):
        x, y = (seed * 97 + i * 211) % width, (seed * 53 + i * 137) % height
        draw.ellipse((x, y, x + 180, y + 120), fill=((i * 40) % 255, (seed * 30) % 255, 120))
    noise = Image.effect_noise(size, 24).convert("RGB")
    Image.blend(image, noise, 0.15).save(path, "JPEG", quality=88)


def plain_pillow(path: str, out_dir: str) -> int:
    """The baseline: decode once (draft), then each size as WebP and JPEG."""
    with Image.open(path) as img:
        img.draft("RGB", (SIZES_PX[0], SIZES_PX[0]))
        image = ImageOps.exif_transpose(img).convert("RGB")
    written = 0
    for size_px in SIZES_PX:
        image = image.copy()
        image.thumbnail((size_px, size_px), Image.Resampling.LANCZOS, reducing_gap=3.0)
        for fmt, ext, options in (("WEBP", "webp", {"method": 4}), ("JPEG", "jpg", {})):
            buffer = io.BytesIO()
            image.save(buffer, fmt, quality=82, **options)
            target = Path(out_dir) / f"{Path(path).stem}-{size_px}.{ext}"
            tmp = target.with_suffix(".tmp")
            tmp.write_bytes(buffer.getvalue())
            os.replace(tmp, target)
            written += 1
    return written


def bench_plain(paths: list[Path], out_dir: Path, processes: int) -> float:
    out_dir.mkdir(exist_ok=True)
    with ProcessPoolExecutor(processes) as pool:
        list(pool.map(plain_pillow, map(str, paths[:processes]), [str(out_dir)] * processes))
        started = time.perf_counter()
        list(pool.map(plain_pillow, map(str, paths), [str(out_dir)] * len(paths)))
        return len(paths) / (time.perf_counter() - started)


async def bench_taskgate(url: str, names: list[str], processes: int) -> float:
    connection = await connect_wire(url, name="bench-thumbnails")
    submitter = await TaskSubmitter.create(connection, binding_keys=TERMINAL_BINDING_KEYS)

    async def one(name: str) -> None:
        outcome = await submitter.submit_and_wait(KIND, {"file": name}, timeout_s=300)
        assert outcome.state == "succeeded", outcome

    try:
        await asyncio.gather(*(one(name) for name in names[:processes]))  # warm-up: pool start
        started = time.perf_counter()
        await asyncio.gather(*(one(name) for name in names))
        return len(names) / (time.perf_counter() - started)
    finally:
        raw = await connection.raw_channel()
        for queue in (task_queue(KIND), dead_queue(KIND)):
            await raw.queue_purge(queue)
        await submitter.close()
        await connection.close()


def start_worker(url: str, storage: Path, processes: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "AMQP_URL": url,
        "STORAGE_DIR": str(storage),
        "WORKER_PROCESSES": str(processes),
        "WORKER_CONCURRENCY": str(processes * 4),
        "WORKER_PREFETCH": str(processes * 8),
        "PYTHONPATH": str(REPO),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "workers"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--images", type=int, default=40, help="images per measurement")
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    import uvloop

    node = None
    url = os.environ.get("AMQP_URL")
    with tempfile.TemporaryDirectory(prefix="bench-thumbnails-") as tmp:
        storage = Path(tmp) / "storage"
        storage.mkdir()
        names = [f"photo-{i}.jpg" for i in range(args.images)]
        for i, name in enumerate(names):
            make_photo(storage / name, i)
        if url is None:
            node = BrokerNode(NodeConfig.on_free_ports(Path(tmp) / "broker"))
            node.start()
            url = node.amqp_url
        try:
            base = bench_plain([storage / n for n in names], Path(tmp) / "plain", args.processes)
            print(f"plain Pillow  {base:7.1f} images/s  ({args.processes} processes)")
            worker = start_worker(url, storage, args.processes)
            try:
                ours = uvloop.run(bench_taskgate(url, names, args.processes))
            finally:
                worker.send_signal(signal.SIGTERM)
                worker.wait(60)
            print(f"taskgate      {ours:7.1f} images/s  (1 worker, pool of {args.processes})")
        finally:
            if node is not None:
                node.stop()
    print(
        f"\n{args.images} images 2400x1600 JPEG -> {len(SIZES_PX)} sizes x (WebP, JPEG), "
        f"{os.cpu_count()} cores; ratio taskgate/plain: {ours / base:.2f}x  (target >= 0.9x)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
