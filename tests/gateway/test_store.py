"""The SQLite task store: per-task sequence numbers, idempotent recording, task summaries."""

from __future__ import annotations

import msgspec
import pytest

from gateway.sqlite_store import SqliteTaskStore
from workers.messages import StatusEvent, encoder, new_event


def event(task_id: str, state: str, **fields) -> tuple[StatusEvent, bytes]:
    made = new_event("images.thumbnail", task_id, state, 1, **fields)
    return made, encoder.encode(made)


@pytest.fixture
async def store(tmp_path):
    store = await SqliteTaskStore.open(tmp_path / "db" / "taskgate.db")
    yield store
    await store.close()


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


async def test_two_stores_on_one_file_share_the_numbering(store, tmp_path):
    other = await SqliteTaskStore.open(tmp_path / "db" / "taskgate.db")
    try:
        await store.record([event("a", "queued")])
        await other.record([event("a", "running")])
        await store.record([event("a", "progress", percent=10.0)])
        seen_by_other = await other.events_after("a", 0, 10)
    finally:
        await other.close()

    assert [(e.seq, e.state) for e in seen_by_other] == [
        (1, "queued"),
        (2, "running"),
        (3, "progress"),
    ]


async def test_the_summary_follows_the_events_and_a_terminal_state_is_final(store):
    await store.record([event("a", "queued"), event("a", "running")])
    await store.record([event("a", "progress", percent=40.0, message="halfway")])
    running = await store.get_task("a")
    await store.record([event("a", "succeeded", result={"outputs": [{"path": "a/64.jpg"}]})])
    await store.record([event("a", "progress", percent=99.0)])  # a straggler
    done = await store.get_task("a")

    assert (running.state, running.percent, running.message) == ("running", 40.0, "halfway")
    assert (done.state, done.percent, done.last_seq) == ("succeeded", 100.0, 5)
    assert msgspec.json.decode(done.result) == {"outputs": [{"path": "a/64.jpg"}]}


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
