"""GET /tasks: a user's own tasks (an admin's: all), filtered, newest first, keyset-paginated."""

from __future__ import annotations

from dataclasses import replace

import msgspec
import pytest

from gateway.store import TaskQuery
from gateway.task_store import DatabaseTaskStore
from workers.messages import encoder, new_event

from .conftest import bearer, jpeg_bytes, running_app, upload


@pytest.fixture
async def store(database):
    """Twelve tasks: ada's at t=1..8 (kinds a/b alternating, t=3 and 6 succeeded), bob's at
    t=9..12; t=5 twice (two ids: the keyset breaks the tie)."""
    store = await DatabaseTaskStore.open(database)
    times = [1, 2, 3, 4, 5, 5, 7, 8, 9, 10, 11, 12]
    for number, created in enumerate(times):
        owner = "ada" if number < 8 else "bob"
        kind = "a" if number % 2 == 0 else "b"
        queued = msgspec.structs.replace(
            new_event(kind, f"t{number:02d}", "queued", 1), timestamp=float(created)
        )
        events = [(queued, encoder.encode(queued))]
        if created in (3, 7):
            done = new_event(kind, f"t{number:02d}", "succeeded", 1, result=None)
            events.append((done, encoder.encode(done)))
        await store.record(events, owner=owner)
    return store


async def pages(store: DatabaseTaskStore, query: TaskQuery) -> list[list[str]]:
    """Every page of ``query``, following the cursor as GET /tasks does."""
    found: list[list[str]] = []
    while True:
        page = await store.list_tasks(query)
        found.append([task.task_id for task in page])
        if len(page) < query.limit:
            return found
        query = replace(query, before=(page[-1].created_at, page[-1].task_id))


async def test_a_users_list_is_newest_first_and_pages_cover_it_once(store):
    found = await pages(store, TaskQuery(limit=3, owner="ada"))

    assert found == [["t07", "t06", "t05"], ["t04", "t03", "t02"], ["t01", "t00"]]


async def test_everyone_s_tasks_with_no_owner_and_filters_narrow_the_list(store):
    everyone = [t for page in await pages(store, TaskQuery(limit=5)) for t in page]
    assert everyone == [f"t{n:02d}" for n in range(11, -1, -1)]
    assert [t.task_id for t in await store.list_tasks(TaskQuery(limit=50, state="succeeded"))] == [
        "t06",
        "t02",
    ]
    by_kind = await store.list_tasks(TaskQuery(limit=50, owner="ada", kind="b"))
    assert [t.task_id for t in by_kind] == ["t07", "t05", "t03", "t01"]
    since = await store.list_tasks(TaskQuery(limit=50, owner="bob", since=10.5))
    assert [t.task_id for t in since] == ["t11", "t10"]


async def test_the_list_query_walks_an_index(store, database):
    if database.dialect != "sqlite":
        pytest.skip("PostgreSQL plans by statistics: bench/task_control.py prints its plan")

    async def plan(tx):
        return await tx.fetch(
            "EXPLAIN QUERY PLAN SELECT task_id FROM tasks WHERE owner = $1"
            " AND (created_at, task_id) < ($2, $3) ORDER BY created_at DESC, task_id DESC"
            " LIMIT 10",
            "ada",
            5.0,
            "t05",
        )

    text = " ".join(str(row[-1]) for row in await database.read(plan))
    assert "tasks_owner_created" in text and "TEMP B-TREE" not in text, text


async def test_get_tasks_shows_a_user_their_own_and_an_admin_everyone(gateway_settings):
    bob = bearer(gateway_settings, "bob")
    async with running_app(gateway_settings) as client:
        mine = [(await upload(client, jpeg_bytes(64, 48))).json()["task_id"] for _ in range(4)]
        files = {"file": ("photo.jpg", jpeg_bytes(64, 48), "image/jpeg")}
        bobs = (await client.post("/uploads", files=files, headers=bob)).json()["task_id"]

        first = (await client.get("/tasks", params={"limit": 3})).json()
        assert [t["task_id"] for t in first["tasks"]] == mine[::-1][:3]
        assert first["tasks"][0]["state"] == "queued"
        params = {"limit": 3, "cursor": first["next_cursor"]}
        second = (await client.get("/tasks", params=params)).json()
        assert [t["task_id"] for t in second["tasks"]] == [mine[0]]
        assert second["next_cursor"] is None

        admin = bearer(gateway_settings, "root", admin=True)
        everyone = (await client.get("/tasks", headers=admin)).json()["tasks"]
        assert {t["task_id"] for t in everyone} == {*mine, bobs}
        params = {"state": "queued", "kind": gateway_settings.upload_kind}
        queued = (await client.get("/tasks", params=params, headers=bob)).json()
        assert [t["task_id"] for t in queued["tasks"]] == [bobs]


BAD_PARAMETERS = [
    {"state": "progress"},
    {"state": "nope"},
    {"kind": ""},
    {"limit": "0"},
    {"limit": "501"},
    {"limit": "ten"},
    {"since": "yesterday"},
    {"since": "nan"},
    {"cursor": "!!"},
    {"cursor": "WzEsMl0="},  # [1,2]: a task id is text
    {"colour": "blue"},
]


async def test_bad_list_parameters_are_400_json(gateway_settings):
    async with running_app(gateway_settings) as client:
        for params in BAD_PARAMETERS:
            response = await client.get("/tasks", params=params)

            assert response.status_code == 400, (params, response.text)
            error = response.json()["error"]
            assert error["code"] == "invalid_query"
            assert error["path"] == f"$.{next(iter(params))}"
