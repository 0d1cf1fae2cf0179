"""The load of bench/uploads.py: one ~100 KB JPEG posted by concurrent loops, and what came back."""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx
from PIL import Image

from bench.common import percentile_ms
from bench.procfs import CpuWindow
from bench.servers import ServerProcess

IMAGE_SIZE = (600, 450)
TARGET_IMAGE_BYTES = 100_000
# Generous: a request slower than this is a failure worth reporting, not a latency.
REQUEST_TIMEOUT_S = 30.0


def make_jpeg(target_bytes: int = TARGET_IMAGE_BYTES) -> tuple[bytes, int]:
    """A noisy 600x450 photo-like JPEG whose quality is picked to land nearest ``target_bytes``.

    Noise keeps JPEG from compressing it to nothing; the gradient keeps Pillow's
    probe and the sniffer looking at a plausible photo. Returns (bytes, quality).
    """
    gradient = Image.linear_gradient("L").resize(IMAGE_SIZE)
    channels = [Image.effect_noise(IMAGE_SIZE, sigma) for sigma in (40, 48, 56)]
    noise = Image.merge("RGB", channels)
    image = Image.blend(Image.merge("RGB", [gradient] * 3), noise, 0.5)

    def encode(quality: int) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=quality)
        return buffer.getvalue()

    # Size grows with quality: bisect for the last quality at or under the target,
    # then keep whichever neighbour is closer.
    low, high = 1, 95
    while low < high:
        middle = (low + high + 1) // 2
        if len(encode(middle)) <= target_bytes:
            low = middle
        else:
            high = middle - 1
    candidates = [(q, encode(q)) for q in {low, min(low + 1, 95)}]
    quality, data = min(candidates, key=lambda c: abs(len(c[1]) - target_bytes))
    return data, quality


def multipart_body(image: bytes) -> tuple[bytes, dict[str, str]]:
    """The exact body httpx would send for ``files={"file": ...}``, encoded once.

    Sending pre-encoded bytes keeps the client's CPU per request low (it shares
    the cores with the server and the broker) without changing the bytes on the wire.
    """
    request = httpx.Request(
        "POST", "http://bench/uploads", files={"file": ("photo.jpg", image, "image/jpeg")}
    )
    return request.read(), {"content-type": request.headers["content-type"]}


@dataclass
class Load:
    body: bytes
    headers: dict[str, str]
    concurrency: int
    seconds: float
    warmup_s: float
    max_requests: int


@dataclass
class Result:
    """What one side answered during the measured window."""

    latencies_s: list[float] = field(default_factory=list)  # of the 202s only
    statuses: Counter[int] = field(default_factory=Counter)  # every status but 202
    failures: Counter[str] = field(default_factory=Counter)  # transport errors, by type
    sample_error: str | None = None
    seconds: float = 0.0
    cpu_s: dict[str, float] = field(default_factory=dict)
    others_cores: float | None = None

    @property
    def accepted(self) -> int:
        return len(self.latencies_s)

    @property
    def attempts(self) -> int:
        return self.accepted + self.statuses.total() + self.failures.total()

    @property
    def per_s(self) -> float:
        return self.accepted / self.seconds if self.seconds else 0.0

    def pct_ms(self, q: float) -> float:
        return percentile_ms(self.latencies_s, q)

    def errors_text(self) -> str:
        parts = [f"{count}x HTTP {status}" for status, count in sorted(self.statuses.items())]
        parts += [f"{count}x {name}" for name, count in sorted(self.failures.items())]
        return ", ".join(parts) or "none"

    def cpu_per_202_text(self) -> str:
        if not self.accepted:
            return "n/a"
        parts = [
            f"{name} {spent / self.accepted * 1000:.2f} ms" for name, spent in self.cpu_s.items()
        ]
        return ", ".join(parts)


def more_to_send(load: Load, deadline: float, result: Result | None) -> bool:
    """Before the deadline and under the request cap (the warm-up, unrecorded, has no cap)."""
    under_cap = result is None or result.attempts < load.max_requests
    return under_cap and time.perf_counter() < deadline


async def post_until(
    client: httpx.AsyncClient, load: Load, deadline: float, result: Result | None
) -> None:
    """One client loop: post sequentially until ``deadline`` (or the request cap)."""
    while more_to_send(load, deadline, result):
        started = time.perf_counter()
        try:
            response = await client.post("/uploads", content=load.body, headers=load.headers)
        except httpx.HTTPError as exc:
            if result is not None:
                result.failures[type(exc).__name__] += 1
                result.sample_error = result.sample_error or repr(exc)
            continue
        if result is None:
            continue
        if response.status_code == 202:
            result.latencies_s.append(time.perf_counter() - started)
        else:
            result.statuses[response.status_code] += 1
            result.sample_error = result.sample_error or (
                f"HTTP {response.status_code}: {response.text[:200]}"
            )


async def measure(server: ServerProcess, load: Load, broker_pid: int | None) -> Result:
    """Warm up, then run ``load.concurrency`` loops for ``load.seconds``; time and CPU them.

    Each loop has its own client and connection: httpcore's pool scans all its
    connections on every request, which at 64 loops on one client made the
    client cost ~5 ms of CPU per request and capped both sides at the same rate.
    """
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                httpx.AsyncClient(
                    base_url=server.base_url,
                    limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
                    timeout=REQUEST_TIMEOUT_S,
                )
            )
            for _ in range(load.concurrency)
        ]
        # Warm-up: connections opened, the gateway's queue declared, caches filled.
        warm_deadline = time.perf_counter() + load.warmup_s
        await asyncio.gather(*(post_until(c, load, warm_deadline, None) for c in clients))
        result = Result()
        cpu = CpuWindow({"server": [server.pid], "broker": [broker_pid] if broker_pid else []})
        cpu.begin()
        started = time.perf_counter()
        deadline = started + load.seconds
        await asyncio.gather(*(post_until(c, load, deadline, result) for c in clients))
        # Requests in flight at the deadline finish after it: the window includes them.
        result.seconds = time.perf_counter() - started
        cpu.end()
        result.cpu_s = cpu.spent
        result.others_cores = cpu.others_cores
    return result
