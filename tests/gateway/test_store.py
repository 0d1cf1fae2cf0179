"""The task store: per-task numbering, idempotent recording, summaries, terminal is final."""

from __future__ import annotations

import contextlib
import sqlite3

import msgspec
import pytest

from gateway.store import RejectedEvent, StoredEvent
from gateway.task_store import DatabaseTaskStore
from infra.database import open_database
from workers.messages import StatusEvent, encoder, new_event


def event(task_id: str, state: str, **fields) -> tuple[StatusEvent, bytes]:
    made = new_event("images.thumbnail", task_id, state, 1, **fields)
    return made, encoder.encode(made)


@pytest.fixture
async def store(database):
    return await DatabaseTaskStore.open(database)


async def test_each_task_numbers_its_events_from_one(store):
    stored = await store.record(
        [event("a", "queued"), event("b", "queued"), event("a", "running"), event("b", "running")]
    )

    assert [(e.task_id, e.seq) for e in stored] == [("a", 1), ("b", 1), ("a", 2), ("b", 2)]
    assert [e.state for e in await store.events_after("a", 0, 10)] == ["queued", "running"]
    assert [e.seq for e in await store.events_after("a", 1, 10)] == [2]


async def test_recording_an_event_twice_keeps_one_copy_and_its_number(store):
    queued, running = event("a", "queued"), event("a", "running")
    first = await store.record([queued, running])
    again = await store.record([running, event("a", "progress", percent=50.0), queued])

    assert [e.seq for e in again] == [first[1].seq, 3, first[0].seq]
    assert [e.seq for e in await store.events_after("a", 0, 10)] == [1, 2, 3]
    assert (await store.get_task("a")).last_seq == 3


async def test_one_batch_numbers_its_own_copies_and_ends_at_its_own_terminal_event(store):
    # The store numbers a batch in memory: a copy or a terminal event earlier in the same
    # batch counts as if it had been recorded before.
    queued, succeeded = event("a", "queued"), event("a", "succeeded", result={})
    late = event("a", "progress", percent=1.0)
    many = [event(f"t{k:03d}", "queued") for k in range(300)]  # more than one IN list

    results = await store.record([queued, queued, succeeded, late, succeeded, *many])

    assert [(r.seq, r.state) for r in results[:3]] == [
        (1, "queued"),
        (1, "queued"),
        (2, "succeeded"),
    ]
    assert isinstance(results[3], RejectedEvent)
    assert results[4] == results[2]
    assert {r.seq for r in results[5:]} == {1} and len(results) == 305
    assert [e.state for e in await store.events_after("a", 0, 10)] == ["queued", "succeeded"]
    assert (await store.get_task("t299")).last_seq == 1


async def test_two_stores_on_one_file_share_the_numbering(tmp_path):
    path = tmp_path / "db" / "taskgate.db"
    first, second = await open_database(path), await open_database(path)
    try:
        store, other = await DatabaseTaskStore.open(first), await DatabaseTaskStore.open(second)
        await store.record([event("a", "queued")])
        await other.record([event("a", "running")])
        await store.record([event("a", "progress", percent=10.0)])
        seen_by_other = await other.events_after("a", 0, 10)
    finally:
        await first.close()
        await second.close()

    assert [(e.seq, e.state) for e in seen_by_other] == [
        (1, "queued"),
        (2, "running"),
        (3, "progress"),
    ]


async def test_the_summary_follows_the_events(store):
    await store.record([event("a", "queued"), event("a", "running")])
    await store.record([event("a", "progress", percent=40.0, message="halfway")])
    running = await store.get_task("a")
    await store.record([event("a", "succeeded", result={"outputs": [{"path": "a/64.jpg"}]})])
    done = await store.get_task("a")

    assert (running.state, running.percent, running.message) == ("running", 40.0, "halfway")
    assert (done.state, done.percent, done.last_seq) == ("succeeded", 100.0, 4)
    assert msgspec.json.decode(done.result) == {"outputs": [{"path": "a/64.jpg"}]}


async def test_nothing_is_recorded_after_a_terminal_event(store):
    succeeded = event("a", "succeeded", result={})
    await store.record([event("a", "queued"), succeeded])
    straggler, forged = event("a", "progress", percent=99.0), event("a", "dead", error="forged")

    results = await store.record([straggler, succeeded, forged])

    assert isinstance(results[0], RejectedEvent) and "already ended succeeded" in results[0].reason
    assert isinstance(results[1], StoredEvent) and results[1].seq == 2  # a duplicate, not late
    assert isinstance(results[2], RejectedEvent) and results[2].event_id == forged[0].event_id
    assert [e.state for e in await store.events_after("a", 0, 10)] == ["queued", "succeeded"]
    assert (await store.get_task("a")).state == "succeeded"


async def test_a_store_file_of_the_sqlite_only_days_is_adopted_with_its_events(tmp_path):
    path = tmp_path / "old.db"
    with contextlib.closing(sqlite3.connect(path)) as old:
        old.executescript(SQLITE_ONLY_SCHEMA)
        old.execute(
            "INSERT INTO tasks VALUES ('a', 'images.thumbnail', 'running', 1, 1.0, 2.0, 2,"
            " 0.0, NULL, NULL, NULL, 'alice')"
        )
        old.execute("INSERT INTO events VALUES ('a', 1, 'e1', 'queued', x'7b7d')")
        old.execute("INSERT INTO events VALUES ('a', 2, 'e2', 'running', x'7b7d')")
        old.commit()
    db = await open_database(path)
    try:
        store = await DatabaseTaskStore.open(db)
        await store.record([event("a", "succeeded", result={})])
        task = await store.get_task("a")
        events = await store.events_after("a", 0, 10)
    finally:
        await db.close()

    assert (task.state, task.owner, task.last_seq) == ("succeeded", "alice", 3)
    assert [(e.seq, e.state) for e in events] == [(1, "queued"), (2, "running"), (3, "succeeded")]


# The schema gateway/sqlite_store.py created before the store had migrations.
SQLITE_ONLY_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    task_id TEXT PRIMARY KEY, kind TEXT NOT NULL, state TEXT NOT NULL, attempt INTEGER NOT NULL,
    created_at REAL NOT NULL, updated_at REAL NOT NULL, last_seq INTEGER NOT NULL,
    percent REAL, message TEXT, result TEXT, error TEXT, owner TEXT
);
CREATE TABLE IF NOT EXISTS events (
    task_id TEXT NOT NULL, seq INTEGER NOT NULL, event_id TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL, body BLOB NOT NULL, PRIMARY KEY (task_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS write_probe (
    id INTEGER PRIMARY KEY CHECK (id = 1), checked_at REAL NOT NULL
);
"""


async def test_failures_keep_their_error_until_a_new_attempt_runs(store):
    await store.record([event("a", "queued"), event("a", "retrying", error="timeout")])
    retrying = await store.get_task("a")
    await store.record([event("a", "running")])
    await store.record([event("a", "dead", error="attempts exhausted")])

    assert (retrying.state, retrying.error) == ("retrying", "timeout")
    assert ((await store.get_task("a")).state, (await store.get_task("a")).error) == (
        "dead",
        "attempts exhausted",
    )


async def test_a_discarded_task_is_gone(store):
    await store.record([event("a", "queued")])
    await store.discard_task("a")

    assert await store.get_task("a") is None
    assert await store.events_after("a", 0, 10) == []
