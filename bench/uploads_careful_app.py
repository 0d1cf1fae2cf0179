"""The hand-written baseline of bench/uploads.py: the upload endpoint a careful team writes.

What the seed's "connection pool pattern" leads to, done right: one aio-pika
connection and one channel with publisher confirms, opened at startup and shared;
``POST /uploads`` reads the multipart form (Starlette spools large files to disk),
writes the file to STORAGE_DIR and a row into SQLite (WAL) on a worker thread so
the event loop never blocks, publishes a persistent JSON message to a durable queue,
awaits its confirm and answers 202. No authentication, no content sniffing, no
outbox: it is the floor a gateway is measured against.

    AMQP_URL=amqp://... STORAGE_DIR=/tmp/x BASELINE_QUEUE=uploads \
        python -m uvicorn bench.uploads_careful_app:app --port 8002

Environment: AMQP_URL, STORAGE_DIR, BASELINE_QUEUE (the queue it publishes to).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO

import aio_pika
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

AMQP_URL = os.environ.get("AMQP_URL", "amqp://127.0.0.1:5672/")
STORAGE_DIR = Path(os.environ.get("STORAGE_DIR", "./var/careful-storage"))
QUEUE = os.environ.get("BASELINE_QUEUE", "uploads")


class Resources:
    """What every request shares: the channel, its queue's name, the database thread."""

    channel: aio_pika.abc.AbstractChannel
    database: sqlite3.Connection
    # One thread owns the SQLite connection (and writes the files): no locking needed.
    disk = ThreadPoolExecutor(max_workers=1, thread_name_prefix="disk")


resources = Resources()


def store(task_id: str, upload: IO[bytes]) -> str:
    """Write the file and its row (on the disk thread); the file's name."""
    name = f"{task_id}.jpg"
    with open(STORAGE_DIR / name, "wb") as out:
        shutil.copyfileobj(upload, out)
    with resources.database:
        resources.database.execute(
            "INSERT INTO uploads (task_id, file, created) VALUES (?, ?, ?)",
            (task_id, name, time.time()),
        )
    return name


async def create_upload(request: Request) -> JSONResponse:
    form = await request.form()
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        return JSONResponse({"error": "send the image in the 'file' field"}, status_code=422)
    task_id = uuid.uuid4().hex
    loop = asyncio.get_running_loop()
    name = await loop.run_in_executor(resources.disk, store, task_id, upload.file)
    await resources.channel.default_exchange.publish(
        aio_pika.Message(
            json.dumps({"task_id": task_id, "file": name}).encode(),
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=task_id,
        ),
        routing_key=QUEUE,
    )
    return JSONResponse(
        {"task_id": task_id, "status_url": f"/tasks/{task_id}"},
        status_code=202,
    )


async def readyz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ready"})


def open_database() -> sqlite3.Connection:
    STORAGE_DIR.mkdir(parents=True, exist_ok=True)
    database = sqlite3.connect(STORAGE_DIR / "uploads.db", check_same_thread=False)
    database.execute("PRAGMA journal_mode=WAL")
    database.execute("PRAGMA synchronous=NORMAL")  # as taskgate's store: durable at checkpoints
    database.execute(
        "CREATE TABLE IF NOT EXISTS uploads (task_id TEXT PRIMARY KEY, file TEXT, created REAL)"
    )
    return database


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    database = resources.database = open_database()
    connection = await aio_pika.connect_robust(AMQP_URL)
    resources.channel = await connection.channel(publisher_confirms=True)
    await resources.channel.declare_queue(QUEUE, durable=True)
    try:
        yield
    finally:
        await connection.close()
        database.close()


app = Starlette(
    routes=[Route("/uploads", create_upload, methods=["POST"]), Route("/readyz", readyz)],
    lifespan=lifespan,
)
