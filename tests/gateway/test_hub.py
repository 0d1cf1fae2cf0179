"""The hub and the stream logic on top of it: never blocked by a slow subscriber, never a gap."""

from __future__ import annotations

import pytest

from gateway.hub import Hub
from gateway.store import StoredEvent
from gateway.streams import event_stream, frame
from gateway.task_store import DatabaseTaskStore
from workers.messages import encoder, new_event


def stored(task_id: str, seq: int, state: str = "progress") -> StoredEvent:
    return StoredEvent(task_id, seq, state, b'{"seq":%d}' % seq)


async def test_events_reach_the_subscribers_of_their_task_only():
    hub = Hub(capacity=8)
    with hub.subscribe("a") as a, hub.subscribe("b") as b:
        hub.publish(stored("a", 1))
        await a.wait(timeout_s=5)

        assert [e.seq for e in a.take()] == [1]
        assert b.take() == []


async def test_a_subscriber_that_stops_reading_is_ended_and_dropped_not_waited_for():
    hub = Hub(capacity=3)
    with hub.subscribe("a") as slow, hub.subscribe("a") as fast:
        for seq in range(1, 5):
            hub.publish(stored("a", seq))
            if seq < 4:
                await fast.wait(timeout_s=5)
                fast.take()
        last = fast.take()

        assert slow.ended == "overflow"
        assert len(hub) == 1
        assert [e.seq for e in last] == [4]


async def test_a_subscription_leaves_the_hub_with_its_stream():
    hub = Hub(capacity=8)
    with hub.subscribe("a"):
        assert len(hub) == 1
    assert len(hub) == 0
    hub.publish(stored("a", 1))  # nobody listens: nothing kept


async def test_wait_returns_when_nothing_comes():
    hub = Hub(capacity=8)
    with hub.subscribe("a") as subscription:
        await subscription.wait(timeout_s=0.01)
        assert subscription.take() == []


@pytest.fixture
async def store(database):
    return await DatabaseTaskStore.open(database)


async def record(store, task_id: str, state: str) -> StoredEvent:
    made = new_event("images.thumbnail", task_id, state, 1)
    (event,) = await store.record([(made, encoder.encode(made))])
    return event


async def test_a_stream_fills_a_gap_in_the_live_events_from_the_store(store):
    hub = Hub(capacity=8)
    first = await record(store, "a", "queued")
    stream = event_stream("a", after=0, reset_state=None, store=store, hub=hub, retry_ms=500)
    assert await anext(stream) == b"retry: 500\n\n"
    assert await anext(stream) == frame(first)
    second = await record(store, "a", "running")  # recorded, but this hub never hears of it
    third = await record(store, "a", "progress")
    fourth = await record(store, "a", "succeeded")
    hub.publish(first)  # a late duplicate: dropped
    hub.publish(third)

    assert [await anext(stream) for _ in range(3)] == [frame(second), frame(third), frame(fourth)]
    with pytest.raises(StopAsyncIteration):
        await anext(stream)


async def test_a_stream_cut_off_by_the_hub_says_reconnect_and_ends(store):
    hub = Hub(capacity=2)
    await record(store, "a", "queued")
    stream = event_stream("a", after=1, reset_state=None, store=store, hub=hub, retry_ms=500)
    assert await anext(stream) == b"retry: 500\n\n"  # subscribed by now
    for seq in range(2, 6):
        hub.publish(stored("a", seq))

    assert await anext(stream) == b": overflow, reconnect\nretry: 500\n\n"
    with pytest.raises(StopAsyncIteration):
        await anext(stream)
    assert len(hub) == 0
