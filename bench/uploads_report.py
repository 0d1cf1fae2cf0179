"""What bench/uploads.py prints: the run's header, each side's figures, a server's trouble."""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import signal
import subprocess
import sys
import tempfile

from bench.common import REPO
from bench.servers import ServerProcess
from bench.uploads_load import IMAGE_SIZE, Result

# CPU used by processes not in the benchmark above which its figures are not trustworthy.
BUSY_MACHINE_CORES = 0.2


def rest_of_machine_text(others_cores: float) -> str:
    text = f"rest of the machine: {others_cores:.2f} cores busy"
    if others_cores > BUSY_MACHINE_CORES:
        text += " (not idle: figures are low and noisy)"
    return text


def report(name: str, result: Result) -> None:
    print(
        f"{name:<30} {result.per_s:>8,.1f} 202s/s  p50={result.pct_ms(0.5):8.2f} ms  "
        f"p99={result.pct_ms(0.99):8.2f} ms  ({result.accepted} x 202 in {result.seconds:.1f} s; "
        f"errors: {result.errors_text()})"
    )
    print(f"{'':<30} CPU per 202: {result.cpu_per_202_text()}")
    if result.others_cores is not None:
        print(f"{'':<30} {rest_of_machine_text(result.others_cores)}")
    if result.sample_error:
        print(f"{'':<30} first error: {result.sample_error}")


def report_server_trouble(server: ServerProcess, result: Result, exit_code: int | None) -> None:
    """Show the server's log tail when it refused requests or did not exit cleanly."""
    clean_exits = (0, -signal.SIGTERM)  # plain uvicorn re-raises SIGTERM once done
    if result.statuses or result.failures or exit_code not in clean_exits:
        print(f"--- {server.name} exited with {exit_code}; last lines of its log ---")
        print(server.log_tail())
        print("---")


def print_header(args: argparse.Namespace, image: bytes, quality: int, body: bytes) -> None:
    command = shlex.join(["python", *[os.path.relpath(sys.argv[0], REPO)], *sys.argv[1:]])
    print(f"$ {command}")
    print(f"taskgate at {source_version()}")
    print(
        f"{os.cpu_count()} cores ({platform.machine()}), Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}"
    )
    print(
        f"image: {IMAGE_SIZE[0]}x{IMAGE_SIZE[1]} JPEG quality {quality}, {len(image):,} bytes "
        f"(multipart body {len(body):,} bytes)"
    )
    print(
        f"load: {args.concurrency} concurrent loops, {args.warmup:g} s warm-up + "
        f"{args.seconds:g} s per side, at most {args.max_requests:,} requests per side"
    )
    storage_root = args.storage_root or tempfile.gettempdir()
    print(f"uploads stored under {storage_root} ({filesystem_of(storage_root)})\n")


def source_version() -> str:
    """The commit under test, marked when the working tree has changes (the gateway moves fast)."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
        changes = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "an unknown commit"
    return f"{commit or 'an unknown commit'}{' + uncommitted changes' if changes else ''}"


def filesystem_of(path: str) -> str:
    """Type and device of the mount holding ``path`` (the longest matching mount point)."""
    real = os.path.realpath(path)
    best = ("", "unknown filesystem")
    try:
        with open("/proc/mounts") as mounts:
            for line in mounts:
                device, mount_point, fs_type = line.split()[:3]
                inside = real == mount_point or real.startswith(mount_point.rstrip("/") + "/")
                if inside and len(mount_point) >= len(best[0]):
                    best = (mount_point, f"{fs_type} on {device}")
    except OSError:
        pass
    return best[1]
