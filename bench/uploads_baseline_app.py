"""The seed-style baseline of bench/uploads.py: an upload endpoint the way tutorials write it.

``POST /uploads`` reads the whole multipart form (``await request.form()``),
reads the file into memory, writes it to STORAGE_DIR, then opens a blocking
pika connection inside the async handler, declares a durable queue, publishes a
persistent JSON message (no publisher confirms), closes the connection and
answers 202. Everything after the form is read blocks the event loop, so one
process serves one upload at a time. It is deliberately naive: it is what the
gateway is measured against, not something to copy.

    AMQP_URL=amqp://... STORAGE_DIR=/tmp/x BASELINE_QUEUE=uploads \
        python -m uvicorn bench.uploads_baseline_app:app --port 8001

Environment: AMQP_URL, STORAGE_DIR, BASELINE_QUEUE (the queue it publishes to).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

import pika
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

AMQP_URL = os.environ["AMQP_URL"]
STORAGE_DIR = Path(os.environ.get("STORAGE_DIR", "./var/baseline-storage"))
QUEUE = os.environ.get("BASELINE_QUEUE", "uploads")
STORAGE_DIR.mkdir(parents=True, exist_ok=True)


async def create_upload(request: Request) -> JSONResponse:
    form = await request.form()
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        return JSONResponse({"error": "send the image in the 'file' field"}, status_code=422)
    contents = await upload.read()
    task_id = uuid.uuid4().hex
    # Blocking file and broker I/O in an async handler is the point of this baseline.
    with open(STORAGE_DIR / f"{task_id}.jpg", "wb") as out:  # noqa: ASYNC230
        out.write(contents)
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        channel = connection.channel()
        channel.queue_declare(queue=QUEUE, durable=True)
        channel.basic_publish(
            exchange="",
            routing_key=QUEUE,
            body=json.dumps({"task_id": task_id, "file": f"{task_id}.jpg", "at": time.time()}),
            # delivery_mode=2: persistent, as the tutorials say for work queues.
            properties=pika.BasicProperties(content_type="application/json", delivery_mode=2),
        )
    finally:
        connection.close()
    return JSONResponse(
        {
            "task_id": task_id,
            "status_url": f"/tasks/{task_id}",
            "events_url": f"/tasks/{task_id}/events",
        },
        status_code=202,
    )


async def readyz(request: Request) -> JSONResponse:
    """Up as soon as it serves: the seed opened its broker connection per request."""
    return JSONResponse({"status": "ready"})


app = Starlette(
    routes=[Route("/uploads", create_upload, methods=["POST"]), Route("/readyz", readyz)]
)
