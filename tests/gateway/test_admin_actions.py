"""The admin API's tasks and actions: dead letters shown, replayed and discarded, a task's
timeline, admins reading any task; every admin route refused to anyone else."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import replace

import httpx
import pytest

import rpc
from gateway.settings import GatewaySettings
from workers import PermanentError, TaskContext, TaskRegistry, Worker, WorkerSettings, dead
from workers.builtin import ThumbnailRequest, thumbnail
from workers.topology import DEFAULT_QUEUE_MAX_LENGTH, STATUS_DEAD_QUEUE, dead_queue

from ..helpers import eventually, on_storage
from .conftest import bearer, jpeg_bytes, read_stream, running_app, upload

ADMIN = "root"


class Kinds:
    """Kinds that fail until the test mends them: ``flaky`` dies at its first failure,
    ``broken`` fails for good. ``ran`` counts each task's runs."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.kind = f"{prefix}.flaky"
        self.mended = asyncio.Event()
        self.ran: Counter[str] = Counter()
        self.registry = TaskRegistry()

        @self.registry.task(self.kind, max_attempts=1)
        async def flaky(ctx: TaskContext, request: ThumbnailRequest) -> dict[str, int]:
            self.ran[ctx.task_id] += 1
            if not self.mended.is_set():
                raise ValueError("not mended yet")
            await ctx.progress(50, "halfway")
            return {"attempt": ctx.attempt}

        self.registry.task(f"{prefix}.thumbnail")(thumbnail)

        @self.registry.task(f"{prefix}.broken")
        async def broken(ctx: TaskContext, request: ThumbnailRequest) -> dict[str, object]:
            self.ran[ctx.task_id] += 1
            if not self.mended.is_set():
                raise PermanentError("broken")
            return {"file": request.file, "stored": await ctx.storage.exists(request.file)}


@pytest.fixture
def kinds(kind_prefix: str) -> Kinds:
    return Kinds(kind_prefix)


@pytest.fixture
def upload_kind() -> str:
    """The kind uploads make; a test marked ``parametrize("upload_kind", [...])`` picks it."""
    return "flaky"


@pytest.fixture
def queue_max_length() -> int | None:
    """The task queues' length limit (None: the default); ``parametrize`` picks another."""
    return None


@pytest.fixture
def settings(
    request: pytest.FixtureRequest,
    gateway_settings: GatewaySettings,
    kinds: Kinds,
    upload_kind: str,
    queue_max_length: int | None,
) -> GatewaySettings:
    """The gateway's; on PostgreSQL for a test that asks for ``pg_url``."""
    settings = replace(gateway_settings, upload_kind=f"{kinds.prefix}.{upload_kind}")
    if queue_max_length is not None:
        settings = replace(settings, queue_max_length=queue_max_length)
    if "pg_url" in request.fixturenames:
        settings = replace(settings, database_url=request.getfixturevalue("pg_url"))
    return settings


@pytest.fixture
async def worker(
    kinds: Kinds, settings: GatewaySettings, worker_connection: rpc.WireConnection
) -> AsyncIterator[Worker]:
    """An in-process worker on the gateway's store and storage, as the worker user."""
    worker_settings = WorkerSettings(
        amqp_url=settings.amqp_url,
        database_path=settings.database_path,
        database_url=settings.database_url,
        queue_max_length=settings.queue_max_length,
        processes=1,
        progress_interval_s=0,
    )
    worker = Worker(
        kinds.registry,
        on_storage(worker_settings, settings.storage_config()),
        name="flaky-worker",
    )
    await worker.start(worker_connection)
    yield worker
    await worker.stop(grace_s=5)


@pytest.fixture
async def clients(
    settings: GatewaySettings,
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """The app, signed in as its ordinary user and, second, as an admin."""
    async with running_app(settings) as user:
        admin = httpx.AsyncClient(
            transport=user._transport,
            base_url="http://gateway",
            headers=bearer(settings, ADMIN, admin=True),
        )
        async with admin:
            yield user, admin


async def submit(client: httpx.AsyncClient) -> str:
    response = await upload(client, jpeg_bytes(64, 48))
    assert response.status_code == 202, response.text
    return str(response.json()["task_id"])


async def wait_state(client: httpx.AsyncClient, task_id: str, state: str) -> dict:
    found: dict = {}

    async def reached() -> bool:
        found.update((await client.get(f"/tasks/{task_id}")).json())
        return found.get("state") == state

    await eventually(reached, timeout_s=30, interval_s=0.02)
    return found


async def dead_letters(admin: httpx.AsyncClient, queue: str) -> list[dict]:
    response = await admin.get(f"/admin/api/dead/{queue}")
    assert response.status_code == 200, response.text
    return list(response.json()["messages"])


async def test_a_dead_task_is_listed_shown_replayed_and_then_succeeds(clients, kinds, worker):
    user, admin = clients
    task_id = await submit(user)
    await wait_state(user, task_id, "dead")
    queue = dead_queue(kinds.kind)

    listed = (await admin.get("/admin/api/dead")).json()["queues"]
    (shown,) = await dead_letters(admin, queue)

    assert {"queue": queue, "kind": kinds.kind, "count": 1} in listed
    assert {q["queue"] for q in listed} >= {STATUS_DEAD_QUEUE, "orders.email.dead"}
    assert shown["message_id"] == task_id
    assert shown["task_id"] == task_id
    assert shown["attempt"] == 1
    assert shown["reason"] == "attempts exhausted (1/1): ValueError: not mended yet"
    assert shown["from_queue"] == f"tasks.{kinds.kind}"
    assert shown["died_at"] is not None and shown["died_at"] > 0
    assert task_id in shown["body"]

    kinds.mended.set()
    replayed = await admin.post(
        f"/admin/api/dead/{queue}/replay", json={"message_ids": [task_id, "no-such-id"]}
    )

    assert replayed.status_code == 200, replayed.text
    assert replayed.json() == {"replayed": 1, "missing": ["no-such-id"], "left": []}
    done = await wait_state(user, task_id, "succeeded")
    assert done["result"] == {"attempt": 1}
    assert await dead_letters(admin, queue) == []
    timeline = (await admin.get(f"/admin/api/tasks/{task_id}/timeline")).json()
    states = [event["state"] for event in timeline["events"]]
    assert states == ["queued", "running", "dead", "queued", "running", "progress", "succeeded"]
    workers = {event["state"]: event["worker"] for event in timeline["events"]}
    assert workers["queued"] is None  # the gateway's, at the upload and at the replay
    assert workers["dead"] == workers["succeeded"] == worker.holder
    assert worker.holder.startswith("flaky-worker@")
    assert timeline["task"]["state"] == "succeeded"
    # Its stream from the start goes past dead to the outcome, as the timeline does.
    stream = await read_stream(user, f"/tasks/{task_id}/events")
    assert [event.event for event in stream if event.event != "message"] == states


async def test_taskgate_dead_replay_as_the_worker_brings_a_dead_task_back(
    clients, kinds, worker, worker_connection
):
    user, _ = clients
    task_id = await submit(user)
    await wait_state(user, task_id, "dead")
    kinds.mended.set()

    # What ``taskgate dead replay KIND`` runs, as the worker user: its queued event goes
    # through the journal to the recorder, which took nothing after dead before.
    replayed = await dead.replay(worker_connection, kinds.kind, max_length=DEFAULT_QUEUE_MAX_LENGTH)

    assert replayed == 1
    assert (await wait_state(user, task_id, "succeeded"))["result"] == {"attempt": 1}
    assert kinds.ran[task_id] == 2


@pytest.mark.parametrize("queue_max_length", [1])
async def test_a_replay_the_broker_refuses_leaves_the_task_dead_and_its_dead_letter(
    clients, kinds, worker, worker_connection
):
    user, admin = clients
    task_id = await submit(user)
    await wait_state(user, task_id, "dead")
    await worker.stop(grace_s=5)
    # No worker now: these fill the queue (length 1; a quorum queue refuses once over it).
    await submit(user)
    await submit(user)
    queue = dead_queue(kinds.kind)

    async def full() -> bool:
        raw = await worker_connection.raw_channel()
        try:
            declared = await raw.queue_declare(f"tasks.{kinds.kind}", passive=True)
            return declared.message_count == 2
        finally:
            await raw.close()

    await eventually(full, timeout_s=30, interval_s=0.05)

    response = await admin.post(f"/admin/api/dead/{queue}/replay", json={"message_ids": [task_id]})

    assert response.status_code == 503, response.text
    task = (await user.get(f"/tasks/{task_id}")).json()
    assert task["state"] == "dead"
    assert task["error"].startswith("replay failed: ")
    assert [m["message_id"] for m in await dead_letters(admin, queue)] == [task_id]


async def test_a_discarded_dead_letter_is_gone_and_its_task_stays_dead(clients, kinds, worker):
    user, admin = clients
    task_ids = [await submit(user) for _ in range(3)]
    for task_id in task_ids:
        await wait_state(user, task_id, "dead")
    queue = dead_queue(kinds.kind)
    before = [m["message_id"] for m in await dead_letters(admin, queue)]
    dropped = before[1]

    response = await admin.post(
        f"/admin/api/dead/{queue}/discard", json={"message_ids": [dropped, "no-such-id"]}
    )

    assert response.status_code == 200, response.text
    assert response.json() == {"discarded": 1, "missing": ["no-such-id"]}
    # The others stay, in their order.
    assert [m["message_id"] for m in await dead_letters(admin, queue)] == [
        before[0],
        before[2],
    ]
    assert (await user.get(f"/tasks/{dropped}")).json()["state"] == "dead"


async def test_only_a_listed_dead_queue_is_shown_and_only_a_tasks_is_replayed(clients):
    _, admin = clients

    unknown = await admin.get("/admin/api/dead/tasks.nope.dead")
    status = await admin.post(
        f"/admin/api/dead/{STATUS_DEAD_QUEUE}/replay", json={"message_ids": ["x"]}
    )

    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "not_found"
    assert status.status_code == 409
    assert status.json()["error"]["code"] == "not_replayable"


async def test_an_admin_reads_any_task_and_its_timeline(clients, kinds, worker):
    user, admin = clients
    kinds.mended.set()
    task_id = await submit(user)
    await wait_state(user, task_id, "succeeded")

    read = await admin.get(f"/tasks/{task_id}")
    timeline = await admin.get(f"/admin/api/tasks/{task_id}/timeline")
    unknown = await admin.get("/admin/api/tasks/nope/timeline")

    assert read.status_code == 200 and read.json()["state"] == "succeeded"
    events = timeline.json()["events"]
    assert [e["state"] for e in events] == ["queued", "running", "progress", "succeeded"]
    assert events[2]["percent"] == 50 and events[2]["message"] == "halfway"
    assert events[-1]["result"] == {"attempt": 1}
    assert [e["timestamp"] for e in events] == sorted(e["timestamp"] for e in events)
    assert unknown.status_code == 404


@pytest.mark.parametrize("upload_kind", ["broken"])
async def test_a_failed_task_retried_runs_once_more_as_a_new_task(
    clients, kinds, worker, storage_config
):
    await retry_a_failed_task(clients, kinds)


@pytest.mark.parametrize("upload_kind", ["broken"])
async def test_a_failed_task_retried_on_postgresql(clients, kinds, worker, pg_url):
    await retry_a_failed_task(clients, kinds)


async def retry_a_failed_task(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient], kinds: Kinds
) -> None:
    user, admin = clients
    task_id = await submit(user)
    await wait_state(user, task_id, "failed")
    kinds.mended.set()

    response = await user.post(f"/tasks/{task_id}/retry", json={})
    again = await admin.post(f"/tasks/{task_id}/retry", json={})

    assert response.status_code == 202, response.text
    retry_id = response.json()["task_id"]
    assert response.json() == {"task_id": retry_id, "retry_of": task_id}
    assert retry_id != task_id
    assert again.status_code == 202 and again.json() == response.json()  # one retry per task
    done = await wait_state(user, retry_id, "succeeded")
    # Its own copy of the upload.
    assert done["result"] == {"file": f"{retry_id}/source.jpg", "stored": True}
    assert (await user.get(f"/tasks/{task_id}")).json()["state"] == "failed"
    assert kinds.ran == Counter({task_id: 1, retry_id: 1})
    timeline = (await admin.get(f"/admin/api/tasks/{retry_id}/timeline")).json()
    assert timeline["events"][0]["message"] == f"retry of {task_id}"
    assert timeline["retry_of"] == task_id
    original = (await admin.get(f"/admin/api/tasks/{task_id}/timeline")).json()
    assert original["retried_by"] == retry_id and original["retry_of"] is None


async def test_an_admin_retries_a_users_dead_task_and_the_user_owns_the_retry(
    clients, kinds, worker
):
    user, admin = clients
    task_id = await submit(user)
    await wait_state(user, task_id, "dead")
    kinds.mended.set()

    response = await admin.post(f"/tasks/{task_id}/retry")

    assert response.status_code == 202, response.text
    retry_id = response.json()["task_id"]
    assert (await wait_state(user, retry_id, "succeeded"))["result"] == {"attempt": 1}
    assert (await user.get(f"/tasks/{task_id}")).json()["state"] == "dead"


async def test_only_a_failed_dead_or_cancelled_task_of_ones_own_is_retried(
    clients, kinds, worker, settings
):
    user, admin = clients
    kinds.mended.set()
    task_id = await submit(user)
    await wait_state(user, task_id, "succeeded")

    succeeded = await user.post(f"/tasks/{task_id}/retry", json={})
    async with running_app(settings, user="mallory") as mallory:
        others = await mallory.post(f"/tasks/{task_id}/retry", json={})
        anonymous = await mallory.post(
            f"/tasks/{task_id}/retry", json={}, headers={"Authorization": ""}
        )
    unknown = await admin.post("/tasks/nope/retry", json={})
    extra = await user.post(f"/tasks/{task_id}/retry", json={"priority": "high"})

    assert succeeded.status_code == 409
    assert succeeded.json()["error"]["code"] == "succeeded"
    assert others.status_code == 404
    assert anonymous.status_code == 401
    assert unknown.status_code == 404
    assert extra.status_code == 422


async def test_a_queued_task_is_not_retried_but_cancelled_it_is(clients, kinds, settings):
    user, admin = clients
    task_id = await submit(user)  # no worker: it stays queued

    queued = await user.post(f"/tasks/{task_id}/retry", json={})
    cancelled = await admin.delete(f"/tasks/{task_id}")
    retried = await user.post(f"/tasks/{task_id}/retry", json={})

    assert queued.status_code == 409
    assert queued.json()["error"]["code"] == "not_finished"
    assert cancelled.status_code == 200 and cancelled.json()["error"] == f"cancelled by {ADMIN}"
    assert retried.status_code == 202, retried.text
    assert (await user.get(f"/tasks/{retried.json()['task_id']}")).json()["state"] == "queued"


@pytest.mark.parametrize("upload_kind", ["thumbnail"])
async def test_a_timeline_shows_the_outputs_and_an_admin_reads_them(clients, worker):
    user, admin = clients
    task_id = await submit(user)
    await wait_state(user, task_id, "succeeded")

    events = (await admin.get(f"/admin/api/tasks/{task_id}/timeline")).json()["events"]

    outputs = events[-1]["result"]["outputs"]
    assert outputs and all(output["url"] == f"/files/{output['path']}" for output in outputs)
    first = await admin.get(outputs[0]["url"])
    assert first.status_code == 200 and first.content == (await user.get(outputs[0]["url"])).content


async def test_a_users_retry_counts_against_their_unfinished_tasks(clients, settings):
    user, _ = clients
    cancelled = await submit(user)
    await user.delete(f"/tasks/{cancelled}")
    await submit(user)  # no worker: it stays queued, the one unfinished task allowed

    async with running_app(replace(settings, tasks_in_flight_per_user=1)) as limited:
        refused = await limited.post(f"/tasks/{cancelled}/retry", json={})
        by_admin = await limited.post(
            f"/tasks/{cancelled}/retry", json={}, headers=bearer(settings, ADMIN, admin=True)
        )

    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "too_many_tasks"
    assert by_admin.status_code == 202, by_admin.text


ADMIN_ROUTES = [
    ("GET", "/admin/api/tasks/{task}/timeline"),
    ("GET", "/admin/api/dead"),
    ("GET", "/admin/api/dead/{queue}"),
    ("POST", "/admin/api/dead/{queue}/replay"),
    ("POST", "/admin/api/dead/{queue}/discard"),
]


@pytest.mark.parametrize(("method", "path"), ADMIN_ROUTES)
async def test_an_admin_route_refuses_anyone_but_an_admin(settings, kinds, method, path):
    url = path.format(task="t1", queue=dead_queue(kinds.kind))
    async with running_app(settings, user=None) as anonymous:
        nobody = await anonymous.request(method, url, json={"message_ids": ["t1"]})
        user = await anonymous.request(
            method, url, json={"message_ids": ["t1"]}, headers=bearer(settings, "mallory")
        )

    assert nobody.status_code == 401, nobody.text
    assert user.status_code == 403, user.text
    assert user.json()["error"]["code"] == "forbidden"
