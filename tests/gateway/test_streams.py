"""SSE streams of task events: every event once, across late joins, reconnects and restarts."""

from __future__ import annotations

import json
from dataclasses import replace

import httpx_sse

from ..helpers import eventually
from .conftest import jpeg_bytes, metrics_auth, read_stream, upload
from .tasks_for_gateway import GATE_STEPS


def status_events(stream: list[httpx_sse.ServerSentEvent]) -> list[httpx_sse.ServerSentEvent]:
    """The task's events, without retry hints (unnamed) and resets."""
    return [event for event in stream if event.event not in ("message", "reset")]


def ids(stream: list[httpx_sse.ServerSentEvent]) -> list[int]:
    return [int(event.id) for event in status_events(stream)]


def is_step(step: int):
    def check(event: httpx_sse.ServerSentEvent) -> bool:
        return event.event == "progress" and json.loads(event.data)["message"] == f"step {step}"

    return check


def release(settings, task_id: str, step: int) -> None:
    """Let the gated task go past ``step`` (see tasks_for_gateway.gated)."""
    (settings.storage_dir / task_id / f"gate-{step}").touch()


async def test_a_late_subscriber_gets_the_whole_history_and_a_closed_stream(
    gateway_process, worker_process
):
    worker_process()
    gateway = gateway_process()
    await gateway.wait_ready()
    async with gateway.client() as client:
        accepted = (await upload(client, jpeg_bytes())).json()
        live = status_events(await read_stream(client, accepted["events_url"]))
        late = status_events(await read_stream(client, accepted["events_url"]))
        resumed_at_end = await client.get(
            accepted["events_url"], headers={"Last-Event-ID": live[-1].id}
        )
        async with client.stream("GET", accepted["events_url"]) as response:
            headers = response.headers

    assert live[-1].event == "succeeded"
    # Nothing between the gateway and the browser may cache or buffer a stream.
    assert headers["content-type"].startswith("text/event-stream")
    assert headers["cache-control"] == "no-cache"
    assert headers["x-accel-buffering"] == "no"
    assert [(e.id, e.event, e.data) for e in late] == [(e.id, e.event, e.data) for e in live]
    # Nothing left to send for a finished task: 204 stops an EventSource reconnecting.
    assert resumed_at_end.status_code == 204


async def test_a_reconnect_with_last_event_id_loses_and_repeats_nothing(
    gateway_settings, gateway_process, worker_process, kind_prefix
):
    worker_process()
    gateway = gateway_process(upload_kind=f"{kind_prefix}.gated")
    await gateway.wait_ready()
    async with gateway.client() as client:
        accepted = (await upload(client, jpeg_bytes())).json()
        task_id, url = accepted["task_id"], accepted["events_url"]
        release(gateway_settings, task_id, 1)
        before = await read_stream(client, url, until=is_step(1))
        # The client is gone while the task moves on.
        for step in GATE_STEPS[1:]:
            release(gateway_settings, task_id, step)
        after = await read_stream(client, url, headers={"Last-Event-ID": before[-1].id})
        history = await read_stream(client, url)

    assert ids(before) + ids(after) == list(range(1, len(status_events(history)) + 1))
    assert [e.data for e in status_events(before) + status_events(after)] == [
        e.data for e in status_events(history)
    ]
    assert status_events(after)[-1].event == "succeeded"


async def test_after_query_starts_a_new_event_source_past_what_the_page_has(
    gateway_process, worker_process
):
    worker_process()
    gateway = gateway_process()
    await gateway.wait_ready()
    async with gateway.client() as client:
        accepted = (await upload(client, jpeg_bytes())).json()
        history = await read_stream(client, accepted["events_url"])
        tail = await read_stream(client, accepted["events_url"] + "?after=2")
        # A reconnecting EventSource sends Last-Event-ID to the same URL: the header wins.
        header_wins = await read_stream(
            client, accepted["events_url"] + "?after=1", headers={"Last-Event-ID": "3"}
        )

    assert ids(tail) == ids(history)[2:]
    assert ids(header_wins) == ids(history)[3:]


async def test_an_unknown_last_event_id_gets_a_reset_and_the_full_history(
    gateway_process, worker_process
):
    worker_process()
    gateway = gateway_process()
    await gateway.wait_ready()
    async with gateway.client() as client:
        accepted = (await upload(client, jpeg_bytes())).json()
        history = status_events(await read_stream(client, accepted["events_url"]))
        garbage = await read_stream(
            client, accepted["events_url"], headers={"Last-Event-ID": b"12garbage\xff"}
        )
        beyond = await read_stream(client, accepted["events_url"] + "?after=999999")

    for stream in (garbage, beyond):
        named = [event for event in stream if event.event != "message"]
        assert named[0].event == "reset"
        reset_state = json.loads(named[0].data)
        assert reset_state["state"] == "succeeded"
        assert reset_state["last_event_id"] == len(history)
        assert [(e.id, e.data) for e in status_events(stream)] == [(e.id, e.data) for e in history]


async def test_two_gateways_stream_tasks_the_other_accepted(
    gateway_settings, gateway_process, worker_process, kind_prefix
):
    worker_process()
    first = gateway_process(upload_kind=f"{kind_prefix}.gated")
    second = gateway_process(upload_kind=f"{kind_prefix}.gated")
    await first.wait_ready()
    await second.wait_ready()
    async with (
        first.client() as via_first,
        second.client() as via_second,
    ):
        accepted = (await upload(via_first, jpeg_bytes())).json()
        task_id = accepted["task_id"]
        release(gateway_settings, task_id, 1)
        # The second gateway is live on a task it did not accept...
        started = await read_stream(via_second, accepted["events_url"], until=is_step(1))
        for step in GATE_STEPS[1:]:
            release(gateway_settings, task_id, step)
        rest = await read_stream(
            via_second, accepted["events_url"], headers={"Last-Event-ID": started[-1].id}
        )
        # ...and the first one tells the same story.
        from_first = await read_stream(via_first, accepted["events_url"])

    assert status_events(rest)[-1].event == "succeeded"
    assert ids(started) + ids(rest) == ids(from_first)
    assert ids(from_first) == list(range(1, len(status_events(from_first)) + 1))


async def test_a_gateway_restarted_mid_task_ends_streams_with_a_retry_hint_and_loses_nothing(
    gateway_settings, gateway_process, worker_process, kind_prefix
):
    worker_process()
    settings = replace(gateway_settings, upload_kind=f"{kind_prefix}.gated")
    gateway = gateway_process(upload_kind=settings.upload_kind)
    await gateway.wait_ready()
    async with gateway.client() as client:
        accepted = (await upload(client, jpeg_bytes())).json()
        task_id, url = accepted["task_id"], accepted["events_url"]
        release(settings, task_id, 1)
        events = []
        async with httpx_sse.aconnect_sse(client, "GET", url) as source:
            async for event in source.aiter_sse():
                events.append(event)
                if is_step(1)(event):
                    # SIGTERM while the stream is open: it must end, and the process exit.
                    assert await gateway.terminate() == 0
        farewell = events[-1]
        assert (farewell.event, farewell.data) == ("message", "")
        assert farewell.retry == settings.sse_retry_ms

        # The task moves on while no gateway runs; the journal keeps its events.
        release(settings, task_id, 2)
        restarted = gateway_process(port=gateway.port, upload_kind=settings.upload_kind)
        await restarted.wait_ready()
        last_id = status_events(events)[-1].id
        resumed = await read_stream(
            client, url, headers={"Last-Event-ID": last_id}, until=is_step(2)
        )
        release(settings, task_id, 3)
        rest = await read_stream(client, url, headers={"Last-Event-ID": resumed[-1].id})
        history = await read_stream(client, url)

    assert ids(events) + ids(resumed) + ids(rest) == ids(history)
    assert ids(history) == list(range(1, len(status_events(history)) + 1))
    assert status_events(history)[-1].event == "succeeded"


async def test_a_client_that_leaves_frees_its_stream_at_once(
    gateway_process, worker_process, kind_prefix
):
    worker_process()
    gateway = gateway_process(upload_kind=f"{kind_prefix}.gated")
    await gateway.wait_ready()
    async with gateway.client() as client:
        task = (await upload(client, jpeg_bytes())).json()
        # The gate stays shut: only the client leaving can end this stream.
        await read_stream(client, task["events_url"], until=lambda event: event.event == "running")

        async def no_streams_left() -> bool:
            metrics = (await client.get("/metrics", headers=metrics_auth(gateway.settings))).text
            return "taskgate_sse_connections 0.0" in metrics

        # Sooner than the next heartbeat (15 s), which would find the socket closed anyway.
        await eventually(no_streams_left, timeout_s=10, interval_s=0.05)
