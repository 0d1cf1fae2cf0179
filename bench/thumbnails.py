"""Benchmark: thumbnails/s through broker + worker vs a plain Pillow loop, same process count.

Both sides get the same JPEG photos and make the same outputs (long edge 800,
256 and 64 px, each as WebP and JPEG). The baseline is a ProcessPoolExecutor
running a straightforward Pillow function; taskgate is ``python -m workers``
with ``WORKER_PROCESSES`` equal to that pool, fed by ``TaskSubmitter``. Both
stay up for the whole run and take turns, round after round, so a slow spell of
the machine hits both sides alike; the figure is the median ratio of the rounds.

    python bench/thumbnails.py                      # starts a private broker
    AMQP_URL=amqp://... python bench/thumbnails.py  # uses that broker
    python bench/thumbnails.py --images 60 --rounds 7 --processes 2
    python bench/thumbnails.py --cpu                # and CPU per image of each process
    python bench/thumbnails.py --tiny               # seconds: checks that it works
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from PIL import Image, ImageDraw, ImageOps  # noqa: E402

from bench.common import (  # noqa: E402
    Medians,
    alternate,
    broker,
    check_measured,
    parse_args,
    stop_process,
)
from bench.procfs import CpuWindow, descendants  # noqa: E402
from rpc.connection import connect_wire  # noqa: E402
from rpc.wire import WireConnection  # noqa: E402
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


class PlainLoop:
    """The baseline: a warm ProcessPoolExecutor mapping ``plain_pillow`` over the images."""

    def __init__(self, processes: int, out_dir: Path) -> None:
        out_dir.mkdir(exist_ok=True)
        self.out_dir = str(out_dir)
        self.pool = ProcessPoolExecutor(processes)

    def run(self, paths: list[str]) -> float:
        """Images/s for one pass over ``paths``."""
        started = time.perf_counter()
        list(self.pool.map(plain_pillow, paths, [self.out_dir] * len(paths)))
        return len(paths) / (time.perf_counter() - started)


class Taskgate:
    """Thumbnail tasks submitted through ``TaskSubmitter`` and awaited to their outcome."""

    def __init__(self, connection: WireConnection, submitter: TaskSubmitter) -> None:
        self.connection = connection
        self.submitter = submitter

    @classmethod
    async def create(cls, url: str) -> Taskgate:
        connection = await connect_wire(url, name="bench-thumbnails")
        return cls(
            connection, await TaskSubmitter.create(connection, binding_keys=TERMINAL_BINDING_KEYS)
        )

    async def run(self, names: list[str]) -> float:
        """Images/s for one pass over ``names``."""

        async def one(name: str) -> None:
            outcome = await self.submitter.submit_and_wait(KIND, {"file": name}, timeout_s=300)
            assert outcome.state == "succeeded", outcome
            self.submitter.forget(outcome.task_id)

        started = time.perf_counter()
        await asyncio.gather(*(one(name) for name in names))
        return len(names) / (time.perf_counter() - started)

    async def close(self) -> None:
        raw = await self.connection.raw_channel()
        for queue in (task_queue(KIND), dead_queue(KIND)):
            await raw.queue_purge(queue)
        await self.submitter.close()
        await self.connection.close()


def cpu_window(worker_pid: int, broker_pid: int | None) -> CpuWindow:
    """CPU of the taskgate side's processes; the worker's pool is looked up at each sample."""

    def pids() -> dict[str, list[int]]:
        return {
            "worker main process": [worker_pid],
            "worker pool processes": descendants(worker_pid),
            "broker": [broker_pid] if broker_pid is not None else [],
        }

    return CpuWindow(pids, own_name="this process (submitter)")


async def compare(
    url: str,
    storage: Path,
    names: list[str],
    processes: int,
    rounds: int,
    meter: CpuWindow | None = None,
) -> list[tuple[float, float]]:
    """(plain, taskgate) images/s per round; the two sides alternate, each warm."""
    paths = [str(storage / name) for name in names]
    plain = PlainLoop(processes, storage.parent / "plain")
    taskgate = await Taskgate.create(url)
    loop = asyncio.get_running_loop()

    async def plain_round() -> float:
        return await loop.run_in_executor(None, plain.run, paths)

    async def taskgate_round() -> float:
        if meter:
            meter.begin()
        rate = await taskgate.run(names)
        if meter:
            meter.end()
        return rate

    try:
        # Warm-up: pool processes started, first images decoded, on both sides.
        await loop.run_in_executor(None, plain.run, paths[:processes])
        await taskgate.run(names[:processes])
        return await alternate(
            rounds, plain_round, taskgate_round, ("plain", "taskgate"), "images/s"
        )
    finally:
        plain.pool.shutdown()
        await taskgate.close()


def start_worker(url: str, storage: Path, processes: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "AMQP_URL": url,
        "STORAGE_DIR": str(storage),
        "DATABASE_PATH": str(storage.parent / "taskgate.db"),  # the outcome log's store
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
    parser.add_argument("--images", type=int, default=40, help="images per round and side")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--cpu", action="store_true", help="also print CPU per image of each taskgate process"
    )
    args = parse_args(parser, tiny={"images": 2, "rounds": 1, "processes": 1})
    import uvloop

    with broker("bench-thumbnails-") as (url, broker_pid, tmp):
        storage = tmp / "storage"
        storage.mkdir()
        names = [f"photo-{i}.jpg" for i in range(args.images)]
        for i, name in enumerate(names):
            make_photo(storage / name, i)
        worker = start_worker(url, storage, args.processes)
        meter = cpu_window(worker.pid, broker_pid) if args.cpu else None
        try:
            results = uvloop.run(compare(url, storage, names, args.processes, args.rounds, meter))
        finally:
            stop_process(worker, 60)
    m = Medians.of(results)
    print(
        f"\nplain Pillow  {m.base:6.1f} images/s  (median of {args.rounds} rounds; "
        f"a pool of {args.processes} processes)\n"
        f"taskgate      {m.ours:6.1f} images/s  (1 worker, pool of {args.processes}, "
        f"through the broker)\n\n"
        f"{args.images} images 2400x1600 JPEG per round -> {len(SIZES_PX)} sizes x (WebP, JPEG), "
        f"{os.cpu_count()} cores; ratio taskgate/plain: median {m.ratio:.2f}x, "
        f"range {m.low:.2f}-{m.high:.2f}x  (target >= 0.9x)"
    )
    if meter is not None:
        print(f"\nCPU per image on the taskgate side ({args.rounds * args.images} images):")
        for name, spent_s in meter.spent.items():
            print(f"  {name:<26} {spent_s * 1000 / (args.rounds * args.images):7.2f} ms")
    return check_measured({"plain.images_per_s": m.base, "taskgate.images_per_s": m.ours})


if __name__ == "__main__":
    sys.exit(main())
