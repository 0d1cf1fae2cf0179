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
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from PIL import Image, ImageDraw, ImageOps  # noqa: E402

from infra.node import BrokerNode, NodeConfig  # noqa: E402
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


class CpuMeter:
    """CPU seconds spent by the taskgate side's processes, read from /proc (Linux only)."""

    def __init__(self, worker_pid: int, broker_pid: int | None) -> None:
        self.worker_pid = worker_pid
        self.broker_pid = broker_pid
        self.spent: dict[str, float] = {}

    def sample(self) -> dict[str, float]:
        parents = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                stat = _proc_stat(int(entry))
                if stat:
                    parents[int(entry)] = int(stat[1])
        pool = [pid for pid, ppid in parents.items() if ppid == self.worker_pid]
        pool += [pid for pid, ppid in parents.items() if ppid in pool]
        found = {
            "worker main process": _cpu_s(self.worker_pid),
            "worker pool processes": sum(map(_cpu_s, pool)),
            "this process (submitter)": _cpu_s(os.getpid()),
        }
        if self.broker_pid is not None:
            found["broker"] = _cpu_s(self.broker_pid)
        return found

    def add(self, before: dict[str, float], after: dict[str, float]) -> None:
        for name, value in after.items():
            self.spent[name] = self.spent.get(name, 0.0) + value - before.get(name, 0.0)


def _proc_stat(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except OSError:
        return []


def _cpu_s(pid: int) -> float:
    stat = _proc_stat(pid)
    return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK") if stat else 0.0


async def compare(
    url: str,
    storage: Path,
    names: list[str],
    processes: int,
    rounds: int,
    meter: CpuMeter | None = None,
) -> list[tuple[float, float]]:
    """(plain, taskgate) images/s per round; the two sides alternate, each warm."""
    paths = [str(storage / name) for name in names]
    plain = PlainLoop(processes, storage.parent / "plain")
    taskgate = await Taskgate.create(url)
    loop = asyncio.get_running_loop()

    async def taskgate_round() -> float:
        before = meter.sample() if meter else {}
        rate = await taskgate.run(names)
        if meter:
            meter.add(before, meter.sample())
        return rate

    try:
        # Warm-up: pool processes started, first images decoded, on both sides.
        await loop.run_in_executor(None, plain.run, paths[:processes])
        await taskgate.run(names[:processes])
        results = []
        for i in range(rounds):
            # Alternate which side goes first, so neither always inherits a warm page cache.
            if i % 2 == 0:
                base = await loop.run_in_executor(None, plain.run, paths)
                ours = await taskgate_round()
            else:
                ours = await taskgate_round()
                base = await loop.run_in_executor(None, plain.run, paths)
            print(
                f"round {i + 1}: plain {base:6.1f}  taskgate {ours:6.1f} images/s  "
                f"ratio {ours / base:.2f}x",
                flush=True,
            )
            results.append((base, ours))
        return results
    finally:
        plain.pool.shutdown()
        await taskgate.close()


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
    parser.add_argument("--images", type=int, default=40, help="images per round and side")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--cpu", action="store_true", help="also print CPU per image of each taskgate process"
    )
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
            worker = start_worker(url, storage, args.processes)
            meter = CpuMeter(worker.pid, node.pid if node else None) if args.cpu else None
            try:
                results = uvloop.run(
                    compare(url, storage, names, args.processes, args.rounds, meter)
                )
            finally:
                worker.send_signal(signal.SIGTERM)
                worker.wait(60)
        finally:
            if node is not None:
                node.stop()
    base = statistics.median(b for b, _ in results)
    ours = statistics.median(o for _, o in results)
    ratio = statistics.median(o / b for b, o in results)
    print(
        f"\nplain Pillow  {base:6.1f} images/s  (median of {args.rounds} rounds; "
        f"a pool of {args.processes} processes)\n"
        f"taskgate      {ours:6.1f} images/s  (1 worker, pool of {args.processes}, "
        f"through the broker)\n\n"
        f"{args.images} images 2400x1600 JPEG per round -> {len(SIZES_PX)} sizes x (WebP, JPEG), "
        f"{os.cpu_count()} cores; ratio taskgate/plain: median {ratio:.2f}x, "
        f"range {min(o / b for b, o in results):.2f}-{max(o / b for b, o in results):.2f}x  "
        f"(target >= 0.9x)"
    )
    if meter is not None:
        print(f"\nCPU per image on the taskgate side ({args.rounds * args.images} images):")
        for name, spent_s in meter.spent.items():
            print(f"  {name:<26} {spent_s * 1000 / (args.rounds * args.images):7.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
