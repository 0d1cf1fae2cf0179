"""POST /uploads: accepted only once the broker has the task; refused cleanly otherwise."""

from __future__ import annotations

import contextlib
import io
import json
import sqlite3
from dataclasses import replace
from pathlib import Path

from PIL import Image

from gateway.settings import GatewaySettings
from infra.ports import free_port
from workers.topology import declare_kind

from .conftest import jpeg_bytes, read_stream, upload, wait_ready


def stored_task_ids(settings: GatewaySettings) -> list[str]:
    if not settings.database_path.exists():
        return []
    # closing(): a connection's own "with" commits but does not close it.
    with contextlib.closing(sqlite3.connect(settings.database_path)) as db:
        return [row[0] for row in db.execute("SELECT task_id FROM tasks")]


def storage_entries(settings: GatewaySettings) -> list[Path]:
    if not settings.storage_dir.exists():
        return []
    return sorted(settings.storage_dir.iterdir())


async def test_upload_is_thumbnailed_and_its_progress_streamed(
    gateway_settings, gateway_process, worker_process
):
    worker_process()
    gateway = gateway_process()
    await gateway.wait_ready()
    async with gateway.client() as client:
        response = await upload(client, jpeg_bytes(1600, 1200))
        assert response.status_code == 202, response.text
        accepted = response.json()
        task_id = accepted["task_id"]
        assert accepted["status_url"] == f"/tasks/{task_id}"
        assert accepted["events_url"] == f"/tasks/{task_id}/events"
        assert response.headers["location"] == accepted["status_url"]

        stream = await read_stream(client, accepted["events_url"])
        events = [event for event in stream if event.event != "message"]
        states = [event.event for event in events]
        assert states[0] == "queued"
        assert states[1] == "running"
        assert "progress" in states
        assert states[-1] == "succeeded"
        assert [int(event.id) for event in events] == list(range(1, len(events) + 1))
        percents = [json.loads(e.data)["percent"] for e in events if e.event == "progress"]
        assert percents == sorted(percents)
        assert stream[0].retry == gateway_settings.sse_retry_ms

        status = (await client.get(accepted["status_url"])).json()
        assert status["state"] == "succeeded"
        assert status["percent"] == 100
        assert status["last_event_id"] == len(events)
        outputs = status["result"]["outputs"]
        assert {(o["format"], o["size_px"]) for o in outputs} == {
            (fmt, size) for fmt in ("WEBP", "JPEG") for size in (800, 256, 64)
        }
        largest = next(o for o in outputs if o["format"] == "JPEG" and o["size_px"] == 800)
        served = await client.get(largest["url"])
        assert served.status_code == 200
        assert Image.open(io.BytesIO(served.content)).size == (800, 600)


async def test_a_file_over_the_limit_is_413_and_leaves_nothing(gateway_app, gateway_settings):
    settings = replace(gateway_settings, max_upload_bytes=50_000)
    async with gateway_app(settings) as client:
        await wait_ready(client)
        response = await upload(client, jpeg_bytes(1600, 1200) + b"\0" * 100_000)

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "file_too_large"
    assert storage_entries(settings) == []
    assert stored_task_ids(settings) == []


async def test_a_file_that_is_not_an_image_is_415_whatever_its_name_and_type(
    gateway_app, gateway_settings
):
    async with gateway_app(gateway_settings) as client:
        await wait_ready(client)
        response = await upload(client, b"#!/bin/sh\necho not an image\n" * 100)
        not_multipart = await client.post(
            "/uploads", content=jpeg_bytes(), headers={"content-type": "image/jpeg"}
        )

    assert response.status_code == 415
    assert "accepted format" in response.json()["error"]["message"]
    assert not_multipart.status_code == 415
    assert not_multipart.json()["error"]["code"] == "not_multipart"
    assert storage_entries(gateway_settings) == []
    assert stored_task_ids(gateway_settings) == []


async def test_unprocessable_uploads_are_422_with_a_reason(gateway_app, gateway_settings):
    async with gateway_app(gateway_settings) as client:
        await wait_ready(client)
        no_file = await client.post("/uploads", data={"watermark": "x"}, files={"other": b""})
        bad_quality = await upload(client, jpeg_bytes(), fields={"quality": "500"})
        corrupt = await upload(client, b"\xff\xd8\xff\xe0" + b"\x13" * 5000)
        two_files = await client.post(
            "/uploads",
            files=[("file", ("a.jpg", jpeg_bytes(), "image/jpeg"))] * 2,
        )

    assert no_file.status_code == 422
    assert no_file.json()["error"]["code"] in {"missing_file", "unexpected_file"}
    assert bad_quality.status_code == 422
    assert "quality" in bad_quality.json()["error"]["message"]
    assert corrupt.status_code == 422
    assert corrupt.json()["error"]["code"] == "invalid_image"
    assert two_files.status_code == 422
    assert two_files.json()["error"]["code"] == "too_many_files"
    assert storage_entries(gateway_settings) == []
    assert stored_task_ids(gateway_settings) == []


async def test_broker_down_is_503_with_retry_after(gateway_app, gateway_settings):
    settings = replace(gateway_settings, amqp_url=f"amqp://guest:guest@127.0.0.1:{free_port()}/")
    async with gateway_app(settings) as client:
        response = await upload(client, jpeg_bytes())

    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json()["error"]["code"] == "unavailable"
    assert storage_entries(settings) == []
    assert stored_task_ids(settings) == []


async def test_a_full_queue_is_503_and_the_refused_upload_leaves_nothing(
    gateway_app, gateway_settings, kind_prefix
):
    # No worker consumes this kind, and its queue holds one task. A quorum queue
    # learns that it is full as it enqueues, so one more may get in before the nacks.
    settings = replace(gateway_settings, upload_kind=f"{kind_prefix}.idle", queue_max_length=1)
    responses = []
    async with gateway_app(settings) as client:
        await wait_ready(client)
        while len(responses) < 5 and (not responses or responses[-1].status_code == 202):
            responses.append(await upload(client, jpeg_bytes()))

    *accepted, refused = responses
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "1"
    assert refused.json()["error"]["code"] == "unavailable"
    assert 1 <= len(accepted) <= 2
    accepted_ids = sorted(response.json()["task_id"] for response in accepted)
    assert sorted(stored_task_ids(settings)) == accepted_ids
    assert [p.name for p in storage_entries(settings)] == accepted_ids


async def test_a_queue_declared_with_other_arguments_is_a_500_naming_it_not_a_503(
    gateway_app, gateway_settings, connection, caplog
):
    # Workers made the kind's queue with another TASK_QUEUE_MAX_LENGTH than this
    # gateway's: retrying cannot help, so it is not "unavailable".
    channel = await connection.raw_channel()
    await declare_kind(channel, gateway_settings.upload_kind, max_length=1234)
    assert gateway_settings.queue_max_length != 1234
    async with gateway_app(gateway_settings) as client:
        await wait_ready(client)
        response = await upload(client, jpeg_bytes())

    assert response.status_code == 500
    error = response.json()["error"]
    assert error["code"] == "broker_refused"
    assert error["reply_code"] == 406
    assert "PRECONDITION_FAILED" in error["message"]
    assert "PRECONDITION_FAILED" in caplog.text
    assert stored_task_ids(gateway_settings) == []
    await channel.close()


async def test_unknown_task_is_404_json(gateway_app, gateway_settings):
    async with gateway_app(gateway_settings) as client:
        status = await client.get("/tasks/nope")
        events = await client.get("/tasks/nope/events")
        file = await client.get("/files/nope/800.jpg")
        traversal = await client.get("/files/..%2F..%2Fetc/passwd")

    for response in (status, events, file, traversal):
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"
