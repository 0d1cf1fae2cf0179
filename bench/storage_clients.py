"""Benchmark: the S3 client libraries taskgate could use, on taskgate's two storage workloads.

Candidates (each on the same private moto server, in one process on uvloop):
``obstore`` through taskgate's own S3Storage (infra/s3_storage.py, what runs),
``aiobotocore``, ``miniopy-async``, and ``boto3`` called in a thread
(``asyncio.to_thread``). A candidate that is not installed is skipped with the
command that installs it: aiobotocore and miniopy-async are not among
taskgate's dependencies (aiobotocore pins ``multidict<7``, which clashes with
constraints.txt).

Workloads, alternating the order of the clients round after round:
- small: ``--objects`` files of ``--small-kib`` KiB (thumbnails), 16 at a time:
  each put, then each got whole. Figures: objects/s, and the CPU this process
  (the client) spends per object, put + get.
- large: one upload of ``--large-mib`` MiB streamed in 64 KiB chunks as the
  gateway receives it (multipart, 8 MiB parts), then streamed back in 64 KiB
  chunks as the gateway serves it. Figures: MiB/s and client CPU ms per MiB.

moto (pure Python) is slower than a real S3 service, so the throughputs are
bounded by the server: the client CPU per object or MiB is the figure that
tells the libraries apart (it is what the gateway's event loop pays).

    python bench/storage_clients.py                       # 3 rounds, 300 x 64 KiB, 64 MiB
    python bench/storage_clients.py --rounds 5 --objects 500
    python bench/storage_clients.py --tiny                # seconds: checks that it works
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import io
import math
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import check_measured, parse_args, run  # noqa: E402
from bench.procfs import cpu_s, own_cpu_s  # noqa: E402
from infra.s3_server import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, S3Server  # noqa: E402
from infra.storage import StorageConfig, open_storage  # noqa: E402

BUCKET = "bench-storage"
CHUNK = 64 * 1024
PART = 8 * 1024 * 1024
CONCURRENCY = 16


class Client:
    """One library, doing what taskgate's storage does."""

    name = ""

    async def put(self, key: str, data: bytes) -> None: ...
    async def get(self, key: str) -> bytes: ...
    async def put_stream(self, key: str, chunks: AsyncIterator[bytes]) -> None: ...
    async def get_stream(self, key: str) -> int: ...
    async def close(self) -> None: ...


class ObstoreClient(Client):
    name = "obstore"

    def __init__(self, endpoint: str) -> None:
        self.storage = open_storage(
            StorageConfig(
                url=f"s3://{BUCKET}/obstore",
                endpoint_url=endpoint,
                region=REGION,
                access_key_id=ACCESS_KEY_ID,
                secret_access_key=SECRET_ACCESS_KEY,
                part_bytes=PART,
            )
        )

    async def put(self, key: str, data: bytes) -> None:
        writer = self.storage.writer(key)
        await writer.write(data)
        await writer.commit()

    async def get(self, key: str) -> bytes:
        stored = await self.storage.read(key)
        return b"".join([chunk async for chunk in stored.chunks])

    async def put_stream(self, key: str, chunks: AsyncIterator[bytes]) -> None:
        writer = self.storage.writer(key)
        async for chunk in chunks:
            await writer.write(chunk)
        await writer.commit()

    async def get_stream(self, key: str) -> int:
        stored = await self.storage.read(key)
        return sum([len(chunk) async for chunk in stored.chunks])


class AiobotocoreClient(Client):
    name = "aiobotocore"

    def __init__(self, endpoint: str) -> None:
        self._endpoint = endpoint
        self._stack = contextlib.AsyncExitStack()
        self._client: Any = None

    async def open(self) -> None:
        from aiobotocore.config import AioConfig
        from aiobotocore.session import get_session

        self._client = await self._stack.enter_async_context(
            get_session().create_client(
                "s3",
                endpoint_url=self._endpoint,
                region_name=REGION,
                aws_access_key_id=ACCESS_KEY_ID,
                aws_secret_access_key=SECRET_ACCESS_KEY,
                config=AioConfig(max_pool_connections=CONCURRENCY),
            )
        )

    async def put(self, key: str, data: bytes) -> None:
        await self._client.put_object(Bucket=BUCKET, Key=f"aiobotocore/{key}", Body=data)

    async def get(self, key: str) -> bytes:
        answer = await self._client.get_object(Bucket=BUCKET, Key=f"aiobotocore/{key}")
        async with answer["Body"] as body:
            return bytes(await body.read())

    async def put_stream(self, key: str, chunks: AsyncIterator[bytes]) -> None:
        key = f"aiobotocore/{key}"
        upload = await self._client.create_multipart_upload(Bucket=BUCKET, Key=key)
        parts: list[dict[str, Any]] = []

        async def send(data: bytes) -> None:
            number = len(parts) + 1
            answer = await self._client.upload_part(
                Bucket=BUCKET, Key=key, UploadId=upload["UploadId"], PartNumber=number, Body=data
            )
            parts.append({"ETag": answer["ETag"], "PartNumber": number})

        async for data in _parts(chunks):
            await send(data)
        await self._client.complete_multipart_upload(
            Bucket=BUCKET, Key=key, UploadId=upload["UploadId"], MultipartUpload={"Parts": parts}
        )

    async def get_stream(self, key: str) -> int:
        answer = await self._client.get_object(Bucket=BUCKET, Key=f"aiobotocore/{key}")
        body = answer["Body"]
        size = 0
        try:
            async for chunk in body.iter_chunks(CHUNK):
                size += len(chunk)
        finally:
            body.close()
        return size

    async def close(self) -> None:
        await self._stack.aclose()


class MinioClient(Client):
    name = "miniopy-async"

    def __init__(self, endpoint: str) -> None:
        from miniopy_async import Minio

        self._client = Minio(
            endpoint.removeprefix("http://"),
            access_key=ACCESS_KEY_ID,
            secret_key=SECRET_ACCESS_KEY,
            secure=False,
            region=REGION,
        )

    async def put(self, key: str, data: bytes) -> None:
        await self._client.put_object(BUCKET, f"minio/{key}", io.BytesIO(data), len(data))

    async def get(self, key: str) -> bytes:
        answer = await self._client.get_object(BUCKET, f"minio/{key}")
        try:
            return await answer.read()
        finally:
            answer.release()

    async def put_stream(self, key: str, chunks: AsyncIterator[bytes]) -> None:
        await self._client.put_object(
            BUCKET, f"minio/{key}", _AsyncReader(chunks), -1, part_size=PART
        )

    async def get_stream(self, key: str) -> int:
        answer = await self._client.get_object(BUCKET, f"minio/{key}")
        size = 0
        try:
            async for chunk in answer.content.iter_chunked(CHUNK):
                size += len(chunk)
        finally:
            answer.release()
        return size

    async def close(self) -> None:
        await self._client.close_session()


class Boto3ThreadClient(Client):
    name = "boto3-thread"

    def __init__(self, endpoint: str) -> None:
        import boto3
        from botocore.config import Config

        self._client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY_ID,
            aws_secret_access_key=SECRET_ACCESS_KEY,
            config=Config(max_pool_connections=CONCURRENCY),
        )

    async def put(self, key: str, data: bytes) -> None:
        await asyncio.to_thread(
            self._client.put_object, Bucket=BUCKET, Key=f"boto3/{key}", Body=data
        )

    async def get(self, key: str) -> bytes:
        def get() -> bytes:
            return bytes(self._client.get_object(Bucket=BUCKET, Key=f"boto3/{key}")["Body"].read())

        return await asyncio.to_thread(get)

    async def put_stream(self, key: str, chunks: AsyncIterator[bytes]) -> None:
        key = f"boto3/{key}"
        client = self._client
        upload = await asyncio.to_thread(client.create_multipart_upload, Bucket=BUCKET, Key=key)
        parts: list[dict[str, Any]] = []
        async for data in _parts(chunks):
            number = len(parts) + 1
            answer = await asyncio.to_thread(
                client.upload_part,
                Bucket=BUCKET,
                Key=key,
                UploadId=upload["UploadId"],
                PartNumber=number,
                Body=data,
            )
            parts.append({"ETag": answer["ETag"], "PartNumber": number})
        await asyncio.to_thread(
            client.complete_multipart_upload,
            Bucket=BUCKET,
            Key=key,
            UploadId=upload["UploadId"],
            MultipartUpload={"Parts": parts},
        )

    async def get_stream(self, key: str) -> int:
        answer = await asyncio.to_thread(self._client.get_object, Bucket=BUCKET, Key=f"boto3/{key}")
        body = answer["Body"]
        size = 0
        # As a gateway would serve it: one thread hop per chunk it sends.
        while chunk := await asyncio.to_thread(body.read, CHUNK):
            size += len(chunk)
        return size


async def _parts(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The stream regrouped into parts of PART bytes (the last one smaller)."""
    buffer = bytearray()
    async for chunk in chunks:
        buffer += chunk
        if len(buffer) >= PART:
            yield bytes(buffer[:PART])
            del buffer[:PART]
    if buffer:
        yield bytes(buffer)


class _AsyncReader:
    """What miniopy-async reads a stream of unknown length from: ``await read(size)``."""

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = bytearray()

    async def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            try:
                self._buffer += await anext(self._chunks)
            except StopAsyncIteration:
                break
        if size < 0:
            size = len(self._buffer)
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data


CANDIDATES: list[tuple[str, Callable[[str], Client], str]] = [
    ("obstore", ObstoreClient, "obstore"),
    ("aiobotocore", AiobotocoreClient, "aiobotocore==2.25.1"),
    ("miniopy_async", MinioClient, "miniopy-async==1.23.6"),
    ("boto3", Boto3ThreadClient, "boto3"),
]


@dataclass
class Figures:
    small_put_per_s: list[float] = field(default_factory=list)
    small_get_per_s: list[float] = field(default_factory=list)
    small_cpu_us: list[float] = field(default_factory=list)
    large_put_mib_s: list[float] = field(default_factory=list)
    large_get_mib_s: list[float] = field(default_factory=list)
    large_cpu_ms_per_mib: list[float] = field(default_factory=list)
    server_cpu_us: list[float] = field(default_factory=list)


async def _timed(work: Callable[[], Awaitable[Any]]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of ``work``."""
    cpu, start = own_cpu_s(), time.perf_counter()
    await work()
    return time.perf_counter() - start, own_cpu_s() - cpu


async def _round(client: Client, args: argparse.Namespace, server_pid: int, f: Figures) -> None:
    tag = uuid.uuid4().hex[:8]
    data = os.urandom(args.small_kib * 1024)
    keys = [f"{tag}-{i}/thumb.webp" for i in range(args.objects)]
    limit = asyncio.Semaphore(CONCURRENCY)

    async def each(fn: Callable[[str], Awaitable[Any]]) -> None:
        async def one(key: str) -> None:
            async with limit:
                await fn(key)

        await asyncio.gather(*(one(key) for key in keys))

    async def get_checked(key: str) -> None:
        if len(await client.get(key)) != len(data):
            raise AssertionError(f"{client.name}: {key} came back short")

    server_cpu = cpu_s(server_pid)
    put_s, put_cpu = await _timed(lambda: each(lambda key: client.put(key, data)))
    get_s, get_cpu = await _timed(lambda: each(get_checked))
    f.server_cpu_us.append((cpu_s(server_pid) - server_cpu) / (2 * args.objects) * 1e6)
    f.small_put_per_s.append(args.objects / put_s)
    f.small_get_per_s.append(args.objects / get_s)
    f.small_cpu_us.append((put_cpu + get_cpu) / args.objects * 1e6)

    big = os.urandom(CHUNK)
    chunks = args.large_mib * 1024 * 1024 // CHUNK

    async def stream() -> AsyncIterator[bytes]:
        for _ in range(chunks):
            yield big

    key = f"{tag}-large/source.jpg"
    try:
        up_s, up_cpu = await _timed(lambda: client.put_stream(key, stream()))
    except Exception as exc:  # a library that cannot stream an upload of unknown length
        print(f"{client.name}: streamed upload failed: {type(exc).__name__}: {exc}")
        f.large_put_mib_s.append(math.nan)
        f.large_get_mib_s.append(math.nan)
        f.large_cpu_ms_per_mib.append(math.nan)
        return
    sizes: list[int] = []

    async def get_large() -> None:
        sizes.append(await client.get_stream(key))

    down_s, down_cpu = await _timed(get_large)
    if sizes != [chunks * CHUNK]:
        raise AssertionError(f"{client.name}: the large object came back as {sizes} bytes")
    f.large_put_mib_s.append(args.large_mib / up_s)
    f.large_get_mib_s.append(args.large_mib / down_s)
    f.large_cpu_ms_per_mib.append((up_cpu + down_cpu) / (2 * args.large_mib) * 1e3)


async def main(args: argparse.Namespace) -> int:
    available = []
    for module, factory, package in CANDIDATES:
        if importlib.util.find_spec(module) is None:
            print(f"skipped {module}: not installed (pip install {package})")
        else:
            available.append(factory)
    with tempfile.TemporaryDirectory(prefix="bench-storage-") as tmp:
        server = S3Server(Path(tmp))
        server.start()
        try:
            server.create_bucket(BUCKET)
            assert server._proc is not None
            clients = [factory(server.endpoint_url) for factory in available]
            for client in clients:
                if isinstance(client, AiobotocoreClient):
                    await client.open()
            figures = {client.name: Figures() for client in clients}
            for i in range(args.rounds):
                order = clients if i % 2 == 0 else clients[::-1]
                for client in order:
                    await _round(client, args, server._proc.pid, figures[client.name])
                print(f"round {i + 1} done", flush=True)
            for client in clients:
                await client.close()
        finally:
            server.stop()
    _report(figures, args)
    return check_measured(
        {f"{name}.small_put_per_s": max(f.small_put_per_s) for name, f in figures.items()}
    )


def _report(figures: dict[str, Figures], args: argparse.Namespace) -> None:
    def m(values: list[float]) -> float:
        return statistics.median(values)

    print(
        f"\nmedians of {args.rounds} rounds; small: {args.objects} x {args.small_kib} KiB,"
        f" {CONCURRENCY} at a time; large: {args.large_mib} MiB in {CHUNK // 1024} KiB chunks"
    )
    header = (
        f"{'client':<14} {'put/s':>7} {'get/s':>7} {'client CPU us/obj':>18}"
        f" {'server CPU us/op':>17} {'put MiB/s':>10} {'get MiB/s':>10} {'CPU ms/MiB':>11}"
    )
    print(header)
    for name, f in figures.items():
        print(
            f"{name:<14} {m(f.small_put_per_s):>7.0f} {m(f.small_get_per_s):>7.0f}"
            f" {m(f.small_cpu_us):>18.0f} {m(f.server_cpu_us):>17.0f}"
            f" {m(f.large_put_mib_s):>10.1f} {m(f.large_get_mib_s):>10.1f}"
            f" {m(f.large_cpu_ms_per_mib):>11.2f}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--objects", type=int, default=300)
    parser.add_argument("--small-kib", type=int, default=64)
    parser.add_argument("--large-mib", type=int, default=64)
    arguments = parse_args(parser, {"rounds": 1, "objects": 8, "large_mib": 6})
    sys.exit(run(main(arguments)))
