"""The admin page's live state: overview, history and stream, on real gateway, worker and rpc
processes; admins only."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import httpx
import httpx_sse
import msgspec
import pytest

from gateway.admin.api_types import HistoryView, OverviewView
from gateway.admin.throughput import Throughput
from gateway.settings import GatewaySettings
from gateway.store import StoredEvent

from ..helpers import eventually
from .conftest import GatewayProcess, bearer, jpeg_bytes, upload
from .signing_in import same_origin, sign_in

ROUTES = ("/admin/api/overview", "/admin/api/history", "/admin/stream")
ADMIN = "root"


@pytest.fixture
def gateway_settings(gateway_settings: GatewaySettings) -> GatewaySettings:
    """Heartbeats, samples and history steps a test can wait for."""
    return replace(
        gateway_settings, presence_interval_s=0.2, admin_sample_s=0.2, admin_history_step_s=0.5
    )


def admin_client(gateway: GatewayProcess) -> httpx.AsyncClient:
    headers = bearer(gateway.settings, ADMIN, admin=True)
    return httpx.AsyncClient(base_url=gateway.url, timeout=30, headers=headers)


async def overview_when(
    client: httpx.AsyncClient, condition: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """The first overview for which ``condition`` holds."""
    found: list[dict[str, Any]] = []

    async def holds() -> bool:
        response = await client.get("/admin/api/overview")
        response.raise_for_status()
        found.append(response.json())
        return condition(found[-1])

    await eventually(holds, timeout_s=60, interval_s=0.1)
    return found[-1]


async def history_when(
    client: httpx.AsyncClient, condition: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """The first history of the last 5 minutes with a point for which ``condition`` holds."""
    found: list[dict[str, Any]] = []

    async def holds() -> bool:
        response = await client.get("/admin/api/history", params={"minutes": "5"})
        response.raise_for_status()
        found.append(response.json())
        return any(condition(point) for point in found[-1]["points"])

    await eventually(holds, timeout_s=60, interval_s=0.1)
    return found[-1]


def kind_of(overview: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((k for k in overview["kinds"] if k["kind"] == kind), {"kind": kind})


def worker_of(overview: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((w for w in overview["workers"] if kind in w["kinds"]), None)


async def test_every_admin_route_refuses_the_anonymous_and_non_admins(
    gateway_settings, gateway_app
):
    async with gateway_app(gateway_settings, user=None) as client:
        # A non-admin signed in with a session cookie, as the page would be.
        token = bearer(gateway_settings, "mallory")["Authorization"].removeprefix("Bearer ")
        signed_in = await client.post("/session", json={"token": token})
        assert signed_in.status_code == 200
        cookie = "; ".join(f"{name}={value}" for name, value in client.cookies.items())
        client.cookies.clear()
        for route in ROUTES:
            anonymous = await client.get(route)
            with_token = await client.get(route, headers=bearer(gateway_settings, "mallory"))
            with_cookie = await client.get(route, headers={"Cookie": cookie})

            assert anonymous.status_code == 401, route
            assert anonymous.json()["error"]["code"] == "unauthorized"
            for refused in (with_token, with_cookie):
                assert refused.status_code == 403, route
                assert refused.headers["content-type"] == "application/json"
                assert refused.json()["error"]["code"] == "forbidden"


async def test_the_overview_follows_a_task_from_its_queue_to_a_worker_to_its_end(
    gateway_settings, gateway_process, worker_process, kind_prefix
):
    kind = f"{kind_prefix}.waiting"
    # Workers beat often; the gateway would count one gone only after three minutes of silence.
    gateway = gateway_process(upload_kind=kind, presence_interval_s=60.0)
    beating = {"PRESENCE_INTERVAL_S": "0.2"}
    await gateway.wait_ready()
    async with admin_client(gateway) as admin, gateway.client() as user:
        first_worker = worker_process(env=beating)
        up = await overview_when(admin, lambda o: worker_of(o, kind) is not None)
        assert worker_of(up, kind)["running"] == []
        # A clean stop takes the worker off the list at once, not after a timeout.
        assert await first_worker.terminate() == 0
        await overview_when(admin, lambda o: worker_of(o, kind) is None)

        task_id = (await upload(user, jpeg_bytes())).json()["task_id"]
        queued = await overview_when(admin, lambda o: kind_of(o, kind).get("queued") == 1)
        assert kind_of(queued, kind)["in_flight"] == 0
        assert kind_of(queued, kind)["oldest_queued_s"] is not None
        # The history sampler saw it waiting too.
        await history_when(admin, lambda p: p["kinds"].get(kind, {}).get("queued") == 1)

        worker_process(env=beating)

        def running_it(o: dict[str, Any]) -> bool:
            worker = worker_of(o, kind)
            return worker is not None and task_id in [t["task_id"] for t in worker["running"]]

        running = await overview_when(admin, running_it)
        msgspec.convert(running, OverviewView)  # as the OpenAPI document says
        assert kind_of(running, kind)["queued"] == 0
        assert kind_of(running, kind)["in_flight"] == 1
        assert kind_of(running, kind)["oldest_queued_s"] is None
        assert [t["kind"] for t in worker_of(running, kind)["running"]] == [kind]
        # The worker is named as the task's timeline names it.
        timeline = (await admin.get(f"/admin/api/tasks/{task_id}/timeline")).json()
        assert worker_of(running, kind)["name"] in [e["worker"] for e in timeline["events"]]
        await history_when(admin, lambda p: p["kinds"].get(kind, {}).get("in_flight") == 1)

        (gateway_settings.storage_dir / task_id / "gate-1").touch()
        done = await overview_when(admin, lambda o: kind_of(o, kind).get("done_per_min", 0) > 0)
        assert kind_of(done, kind)["in_flight"] == 0
        assert kind_of(done, kind)["failed_per_min"] == 0

        # A step's ends are written once it is over.
        history = await history_when(admin, lambda p: p["kinds"].get(kind, {}).get("done") == 1)
        bad = await admin.get("/admin/api/history", params={"minutes": "0"})

        # The history is in the store: a gateway started later shows it as it was.
        assert await gateway.terminate() == 0
        later = gateway_process(upload_kind=kind)
        await later.wait_ready()
        async with admin_client(later) as admin_of_later:
            after_restart = (
                await admin_of_later.get("/admin/api/history", params={"minutes": "5"})
            ).json()

    msgspec.convert(history, HistoryView)
    assert history["step_s"] == 0.5
    done_points = [p for p in history["points"] if p["kinds"].get(kind, {}).get("done")]
    assert [p["kinds"][kind]["done"] for p in done_points] == [1]
    assert [p for p in after_restart["points"] if p["at"] == done_points[0]["at"]] == done_points
    assert bad.status_code == 400


def test_throughput_counts_ends_by_kind_and_tick():
    throughput = Throughput(tick_s=0.5)

    def ended(kind: str, state: str) -> StoredEvent:
        body = json.dumps({"kind": kind, "state": state, "task_id": "t"}).encode()
        return StoredEvent("t", 3, state, body)

    for kind, state in [("a", "succeeded"), ("a", "dead"), ("a", "failed"), ("b", "succeeded")]:
        throughput.count(ended(kind, state))
    for state in ("cancelled", "running", "progress"):
        throughput.count(ended("a", state))
    throughput.count(StoredEvent("t", 4, "succeeded", b"not json"))

    now = time.time()
    assert throughput.between(now - 60, now + 1) == {"a": (1, 2), "b": (1, 0)}
    assert throughput.between(now + 1, now + 60) == {}


async def test_an_rpc_server_and_its_calls_appear(gateway_process, rpc_process):
    gateway = gateway_process()
    await gateway.wait_ready()
    async with admin_client(gateway) as admin, gateway.client() as user:
        answers = [
            await user.post("/rpc/inventory.check", json={"skus": ["no-such-sku"]}),
            await user.post("/rpc/inventory.check", json={"skus": []}),
        ]

        def served(o: dict[str, Any]) -> bool:
            calls = [m for m in o["rpc_methods"] if m["method"] == "inventory.check"]
            return bool(calls) and calls[0]["calls"] == 2

        overview = await overview_when(admin, served)

    msgspec.convert(overview, OverviewView)
    (server,) = overview["rpc_servers"]
    assert "inventory.check" in server["methods"] and "orders.quote" in server["methods"]
    assert server["pid"] == rpc_process.process.pid
    (method,) = [m for m in overview["rpc_methods"] if m["method"] == "inventory.check"]
    assert method["errors"] == sum(1 for a in answers if a.status_code != 200)
    assert method["p50_ms"] is not None and method["p50_ms"] <= method["p99_ms"]


async def test_the_stream_sends_overviews_and_another_users_task_changes(
    gateway_process, worker_process
):
    worker_process()
    gateway = gateway_process()
    await gateway.wait_ready()
    seen: list[httpx_sse.ServerSentEvent] = []
    async with admin_client(gateway) as admin, gateway.client("ada") as user:
        async with httpx_sse.aconnect_sse(admin, "GET", "/admin/stream") as source:
            assert source.response.status_code == 200
            events = source.aiter_sse()
            async for event in events:
                seen.append(event)
                if event.event == "overview":
                    break
            task_id = (await upload(user, jpeg_bytes())).json()["task_id"]
            async for event in events:
                seen.append(event)
                if event.event == "task" and json.loads(event.data)["state"] == "succeeded":
                    break
            # And the overviews go on.
            async for event in events:
                seen.append(event)
                if event.event == "overview":
                    break

    overviews = [json.loads(e.data) for e in seen if e.event == "overview"]
    tasks = [json.loads(e.data) for e in seen if e.event == "task"]
    assert seen[0].retry is not None  # the first frame: the reconnect delay
    assert {"at", "kinds", "workers", "rpc_servers", "rpc_methods"} <= overviews[-1].keys()
    assert {t["task_id"] for t in tasks} == {task_id}
    assert tasks[-1]["state"] == "succeeded"
    assert tasks[-1]["events_url"] == f"/tasks/{task_id}/events"


async def read_admin_stream(client: httpx.AsyncClient, opened: asyncio.Event) -> list[str]:
    """The names of the events of one admin stream, until the server ends it; ``opened`` is
    set at the first overview."""
    names = []
    async with httpx_sse.aconnect_sse(client, "GET", "/admin/stream") as source:
        source.response.raise_for_status()
        async for event in source.aiter_sse():
            names.append(event.event)
            if event.event == "overview":
                opened.set()
    return names


async def test_the_stream_ends_at_sign_out_and_at_shutdown(gateway_process):
    gateway = gateway_process()
    await gateway.wait_ready()
    async with gateway.client(user=None) as browser, admin_client(gateway) as api:
        await sign_in(browser, gateway.settings, ADMIN, admin=True)
        opened = [asyncio.Event(), asyncio.Event()]
        session_stream = asyncio.create_task(read_admin_stream(browser, opened[0]))
        token_stream = asyncio.create_task(read_admin_stream(api, opened[1]))
        for event in opened:
            await event.wait()
        signed_out = await browser.delete("/session", headers=same_origin(browser))
        ended_by_sign_out = await asyncio.wait_for(session_stream, timeout=30)
        still_open = not token_stream.done()
        assert await gateway.terminate() == 0
        ended_by_shutdown = await asyncio.wait_for(token_stream, timeout=30)

    assert signed_out.status_code == 204
    assert "overview" in ended_by_sign_out
    assert still_open
    assert "overview" in ended_by_shutdown
