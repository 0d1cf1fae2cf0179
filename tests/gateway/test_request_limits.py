"""What one request or one user may cost the app: JSON depth, form fields, sizes, tasks, files."""

from __future__ import annotations

from dataclasses import replace

import pytest

from gateway.task_store import DatabaseTaskStore
from workers.messages import encoder, new_event

from ..helpers import eventually
from .conftest import jpeg_bytes, upload, wait_ready

DEEP = b'{"x": ' + b"[" * 5_000 + b"]" * 5_000 + b"}"


@pytest.mark.parametrize("path", ["/rpc/orders.quote", "/orders", "/notifications", "/session"])
async def test_json_nested_thousands_deep_is_400_not_500(gateway_app, gateway_settings, path):
    user = None if path == "/session" else "ada"
    async with gateway_app(gateway_settings, user=user) as client:
        await wait_ready(client)
        response = await client.post(
            path, content=DEEP, headers={"content-type": "application/json"}
        )

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "json_too_deep"


async def test_json_as_deep_as_the_bound_with_brackets_in_strings_is_not_refused(
    gateway_app, gateway_settings
):
    # 64 levels, and strings full of brackets that a naive count would take for nesting.
    body = b'{"x": "' + b"[" * 500 + b'", "y": ' + b"[" * 63 + b"]" * 63 + b"}"
    async with gateway_app(gateway_settings, user=None) as client:
        response = await client.post(
            "/session", content=body, headers={"content-type": "application/json"}
        )

    # The session endpoint then refuses the fields, not the depth.
    assert response.status_code == 422


async def test_the_form_field_limit_counts_every_field_not_names(gateway_app, gateway_settings):
    async with gateway_app(gateway_settings) as client:
        await wait_ready(client)
        response = await client.post(
            "/uploads",
            data={"f": ["x"] * 17},
            files={"file": ("photo.jpg", jpeg_bytes(), "image/jpeg")},
        )

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "too_many_fields"


async def test_an_empty_file_is_422_missing_file(gateway_app, gateway_settings):
    async with gateway_app(gateway_settings) as client:
        await wait_ready(client)
        response = await upload(client, b"")

    assert response.status_code == 422
    assert response.json()["error"]["code"] == "missing_file"


async def test_sizes_are_few_and_never_beyond_the_image(gateway_app, gateway_settings):
    async with gateway_app(gateway_settings) as client:
        await wait_ready(client)
        image = jpeg_bytes(640, 480)
        too_many = await upload(client, image, fields={"sizes": "10,20,30,40,50,60,70"})
        too_large = await upload(client, image, fields={"sizes": "320,641"})
        # The audit's 819 sizes fit in one 4 KiB field.
        hundreds = await upload(client, image, fields={"sizes": ",".join(["8192"] * 819)})
        within = await upload(client, image, fields={"sizes": "640,320,64"})

    assert [r.status_code for r in (too_many, too_large, hundreds)] == [422, 422, 422]
    assert "at most 6 sizes" in too_many.json()["error"]["message"]
    assert "641" in too_large.json()["error"]["message"]
    assert within.status_code == 202, within.text


async def test_the_store_counts_a_users_unfinished_tasks_up_to_a_bound(database):
    store = await DatabaseTaskStore.open(database)
    states = {"t1": "queued", "t2": "running", "t3": "retrying", "t4": "succeeded", "t5": "dead"}
    for task_id, state in states.items():
        events = [new_event("k", task_id, "queued", 1)]
        if state != "queued":
            events.append(new_event("k", task_id, state, 1))
        await store.record([(e, encoder.encode(e)) for e in events], owner="ada")
    queued = new_event("k", "t6", "queued", 1)
    await store.record([(queued, encoder.encode(queued))], owner="grace")

    assert await store.count_unfinished("ada", up_to=100) == 3
    assert await store.count_unfinished("ada", up_to=2) == 2
    assert await store.count_unfinished("grace", up_to=100) == 1
    assert await store.count_unfinished("nobody", up_to=100) == 0


async def test_unfinished_tasks_per_user_are_capped_with_429(gateway_app, gateway_settings):
    settings = replace(gateway_settings, tasks_in_flight_per_user=2)
    async with gateway_app(settings) as client:
        await wait_ready(client)
        # No worker runs: both tasks stay queued.
        accepted = [await upload(client, jpeg_bytes()) for _ in range(2)]
        refused = await upload(client, jpeg_bytes())
    async with gateway_app(settings, user="grace") as other:
        await wait_ready(other)
        for_another_user = await upload(other, jpeg_bytes())

    assert [r.status_code for r in accepted] == [202, 202]
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "1"
    assert refused.json()["error"]["code"] == "too_many_tasks"
    assert for_another_user.status_code == 202


async def test_files_are_a_tasks_outputs_only_never_its_upload(
    gateway_app, gateway_settings, worker_process
):
    async with gateway_app(gateway_settings) as client:
        await wait_ready(client)
        queued = (await upload(client, jpeg_bytes())).json()["task_id"]
        # Before any worker ran: the upload is on disk, and still not served.
        upload_while_queued = await client.get(f"/files/{queued}/source.jpg")
        worker_process()

        async def finished() -> bool:
            return (await client.get(f"/tasks/{queued}")).json()["state"] == "succeeded"

        await eventually(finished, timeout_s=60)
        result = (await client.get(f"/tasks/{queued}")).json()["result"]
        output = await client.get(result["outputs"][0]["url"])
        upload_once_done = await client.get(f"/files/{queued}/source.jpg")

    assert (gateway_settings.storage_dir / queued / "source.jpg").is_file()
    assert upload_while_queued.status_code == 404
    assert upload_once_done.status_code == 404
    assert output.status_code == 200
    assert output.headers["cache-control"].startswith("private")
