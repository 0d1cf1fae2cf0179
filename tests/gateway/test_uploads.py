"""POST /uploads: accepted once its task and message are committed; else refused, nothing kept."""

from __future__ import annotations

import contextlib
import io
import json
import sqlite3
import tracemalloc
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

from PIL import Image
from prometheus_client import REGISTRY

from gateway.settings import GatewaySettings
from workers.topology import declare_kind

from ..helpers import eventually, take_tasks, unreachable_amqp_url
from .conftest import bearer, jpeg_bytes, read_stream, upload, wait_ready


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
    gateway_settings, gateway_process, worker_process, storage_config
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
        assert served.headers["content-type"] == "image/jpeg"
        assert served.headers["content-length"] == str(largest["bytes"])
        assert served.headers["x-content-type-options"] == "nosniff"
        assert served.headers["cache-control"].startswith("private")
        async with gateway.client("bob") as bob:
            assert (await bob.get(largest["url"])).status_code == 404
        # Only outputs are served: not the upload, though it is stored beside them.
        assert (await client.get(f"/files/{task_id}/source.jpg")).status_code == 404


async def test_a_file_over_the_limit_is_413_and_leaves_nothing(
    gateway_app, gateway_settings, storage_leftovers
):
    settings = replace(gateway_settings, max_upload_bytes=50_000)
    async with gateway_app(settings) as client:
        await wait_ready(client)
        response = await upload(client, jpeg_bytes(1600, 1200) + b"\0" * 100_000)

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "file_too_large"
    assert await storage_leftovers() == []
    assert stored_task_ids(settings) == []


async def test_a_file_that_is_not_an_image_is_415_whatever_its_name_and_type(
    gateway_app, gateway_settings, storage_leftovers
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
    assert await storage_leftovers() == []
    assert stored_task_ids(gateway_settings) == []


async def test_unprocessable_uploads_are_422_with_a_reason(
    gateway_app, gateway_settings, storage_leftovers
):
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
    assert await storage_leftovers() == []
    assert stored_task_ids(gateway_settings) == []


def outbox_ids(settings: GatewaySettings) -> list[str]:
    with contextlib.closing(sqlite3.connect(settings.database_path)) as db:
        return sorted(row[0] for row in db.execute("SELECT message_id FROM outbox"))


async def test_with_the_broker_down_uploads_are_accepted_up_to_the_outbox_bound(
    gateway_app, gateway_settings
):
    settings = replace(
        gateway_settings,
        amqp_url=unreachable_amqp_url(),
        outbox_max_pending=2,
    )
    async with gateway_app(settings) as client:
        responses = [await upload(client, jpeg_bytes()) for _ in range(3)]

    *accepted, refused = responses
    assert [response.status_code for response in accepted] == [202, 202]
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "5"
    assert refused.json()["error"]["code"] == "outbox_full"
    # Accepted: the task, its directory and its message; refused: nothing at all.
    accepted_ids = sorted(response.json()["task_id"] for response in accepted)
    assert sorted(stored_task_ids(settings)) == accepted_ids
    assert [p.name for p in storage_entries(settings)] == accepted_ids
    assert outbox_ids(settings) == accepted_ids


async def test_a_full_queue_delays_the_tasks_it_refuses_and_loses_none(
    gateway_app, gateway_settings, kind_prefix, amqp_url
):
    # No worker consumes this kind and its queue holds one task: the broker nacks the
    # others, the relay keeps them and tries again until the queue has room.
    settings = replace(
        gateway_settings,
        upload_kind=f"{kind_prefix}.idle",
        queue_max_length=1,
        outbox_retry_max_s=0.2,
    )
    nacked_before = nacks()
    async with gateway_app(settings) as client:
        await wait_ready(client)
        responses = []
        # Until the broker has refused one: a quorum queue may take a few past its length.
        while nacks() == nacked_before and len(responses) < 20:
            responses.append(await upload(client, jpeg_bytes()))
            await eventually(lambda: all_tried(settings))
        accepted_ids = sorted(response.json()["task_id"] for response in responses)
        assert outbox_ids(settings)  # the refused one waits
        received: list[str] = []

        async def all_received() -> bool:
            # Each take makes room for the relay's next attempt.
            received.extend(await take_tasks(amqp_url, settings.upload_kind))
            return not outbox_ids(settings) and len(received) >= len(responses)

        await eventually(all_received)

    assert {response.status_code for response in responses} == {202}
    assert nacks() > nacked_before
    assert sorted(received) == accepted_ids


def nacks() -> float:
    return REGISTRY.get_sample_value("taskgate_outbox_retries_total", {"reason": "nacked"}) or 0


async def all_tried(settings: GatewaySettings) -> bool:
    """The relay has tried every entry once: published it, or kept it after a failure."""
    with contextlib.closing(sqlite3.connect(settings.database_path)) as db:
        return db.execute("SELECT count(*) FROM outbox WHERE attempts = 0").fetchone()[0] == 0


async def test_an_idempotency_key_gives_the_same_task_once_and_refuses_another_file(
    gateway_app, gateway_settings, kind_prefix, amqp_url, storage_leftovers
):
    settings = replace(gateway_settings, upload_kind=f"{kind_prefix}.idle")
    image, other_image = jpeg_bytes(), jpeg_bytes(320, 240)
    async with gateway_app(settings) as client:
        await wait_ready(client)
        key = {"Idempotency-Key": "upload-1"}
        first = await client.post("/uploads", files={"file": ("a.jpg", image)}, headers=key)
        again = await client.post("/uploads", files={"file": ("b.jpg", image)}, headers=key)
        other = await client.post("/uploads", files={"file": ("a.jpg", other_image)}, headers=key)
        other_options = await client.post(
            "/uploads", files={"file": ("a.jpg", image)}, data={"quality": "50"}, headers=key
        )
        bob = await client.post(
            "/uploads",
            files={"file": ("a.jpg", image)},
            headers={**key, **bearer(settings, "bob")},
        )
        too_long = await client.post(
            "/uploads", files={"file": ("a.jpg", image)}, headers={"Idempotency-Key": "k" * 201}
        )

        async def published() -> bool:
            return not outbox_ids(settings)

        await eventually(published)
        queued = await take_tasks(amqp_url, settings.upload_kind)

    assert first.status_code == again.status_code == bob.status_code == 202
    assert again.json() == first.json()
    assert bob.json()["task_id"] != first.json()["task_id"]
    for conflict in (other, other_options):
        assert conflict.status_code == 409
        assert conflict.json()["error"]["code"] == "idempotency_conflict"
    assert too_long.status_code == 400
    # One task and one directory per key and user; the retry's copy of the file is gone.
    expected = sorted([first.json()["task_id"], bob.json()["task_id"]])
    assert sorted(stored_task_ids(settings)) == expected
    assert await storage_leftovers() == expected
    assert sorted(queued) == expected


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


async def test_an_upload_streams_into_the_store_and_is_never_held_in_memory(
    gateway_app, gateway_settings, storage_config, storage_leftovers
):
    size = 24 * 1024 * 1024
    settings = replace(gateway_settings, max_upload_bytes=2 * size)
    image, padding = jpeg_bytes(), bytes(64 * 1024)
    boundary = "taskgate-test-boundary"
    seen_midway: list[list[str]] = []

    async def body() -> AsyncIterator[bytes]:
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="big.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
        ).encode() + image
        for sent in range(0, size, len(padding)):
            if sent == size * 2 // 3:  # the first 16 MiB must be in the store by now
                seen_midway.append(await being_stored())
            yield padding
        yield f"\r\n--{boundary}--\r\n".encode()

    async def being_stored() -> list[str]:
        if storage_config.is_local:
            return [
                f"{part.stat().st_size // (1 << 20)} MiB"
                for part in settings.storage_dir.glob("*/.source.jpg.part-*")
            ]
        return [entry for entry in await storage_leftovers() if entry.startswith("incomplete")]

    async with gateway_app(settings) as client:
        await wait_ready(client)
        tracemalloc.start()
        try:
            response = await client.post(
                "/uploads",
                content=body(),
                headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
            )
            _, peak_bytes = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()

    assert response.status_code == 202, response.text
    task_id = response.json()["task_id"]
    # Local: the part file has grown past 8 MiB; S3: a multipart upload is under way.
    assert len(seen_midway[0]) == 1, seen_midway
    if storage_config.is_local:
        assert int(seen_midway[0][0].split()[0]) >= 8
    assert await storage_leftovers() == [task_id]
    assert peak_bytes < size // 3, f"{peak_bytes:,} bytes held at once"
