"""Leases and stuck tasks (issue 18, point 4), with real gateway and worker processes.

A worker SIGSTOPped while it holds tasks (one running, the rest prefetched)
keeps its deliveries unacked for as long as the broker believes its
connection lives; its leases run out within TASK_LEASE_S, the gateway's
watchdog marks each task ``stuck`` and queues it again, and another worker
finishes it, once. SIGCONT: the stopped worker drops them without running or
finishing them, and acks their deliveries.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from dataclasses import replace

import aio_pika
import httpx
import pytest

from gateway.settings import GatewaySettings
from infra.database import open_database
from workers.topology import task_queue

from ..helpers import eventually
from .conftest import ChildProcess, GatewayProcess, jpeg_bytes, read_stream, upload

# Short, but not so short that a live worker on this loaded machine misses its renewals.
LEASE_S = 4.0
HELD = 4  # the stopped worker runs one and has the others prefetched
# Far below the ~2 minutes the broker's heartbeats would take to free the deliveries.
BOUND_S = 10 * LEASE_S


@pytest.fixture
def gateway_settings(gateway_settings: GatewaySettings, kind_prefix: str) -> GatewaySettings:
    """Every process of the test with a short lease; uploads make tasks that wait for a gate."""
    return replace(gateway_settings, task_lease_s=LEASE_S, upload_kind=f"{kind_prefix}.waiting")


async def claims_by_holder(settings: GatewaySettings) -> Counter[str]:
    database = await open_database(settings.database)
    try:
        rows = await database.read(
            lambda tx: tx.fetch(
                "SELECT holder FROM worker_claims WHERE scope = 'task' AND until_s > 0"
            )
        )
    finally:
        await database.close()
    return Counter(row[0] for row in rows)


def open_gates(settings: GatewaySettings, task_ids: list[str]) -> None:
    for task_id in task_ids:
        (settings.storage_dir / task_id / "gate-1").touch()


# Three processes start on a machine that may be loaded: more than the default per-test limit.
@pytest.mark.timeout(300)
async def test_a_stopped_workers_tasks_finish_elsewhere_once_and_it_does_not_run_them_again(
    gateway_process, worker_process, gateway_settings: GatewaySettings, amqp_url: str
) -> None:
    gateway: GatewayProcess = gateway_process()
    await gateway.wait_ready()
    stopped: ChildProcess = worker_process(
        env={"WORKER_CONCURRENCY": "1", "WORKER_PREFETCH": str(HELD)}
    )
    async with gateway.client() as client:
        task_ids = []
        for _ in range(HELD):
            response = await upload(client, jpeg_bytes(64, 48))
            assert response.status_code == 202, response.text
            task_ids.append(response.json()["task_id"])

        async def all_held() -> bool:
            held = await claims_by_holder(gateway_settings)
            return len(held) == 1 and sum(held.values()) == HELD

        await eventually(all_held, timeout_s=60)
        await read_stream(client, f"/tasks/{task_ids[0]}/events", until=running)
        helper = worker_process()
        await eventually(lambda: consuming(helper), timeout_s=60)

        stopped.process.send_signal(signal.SIGSTOP)
        stopped_at = time.monotonic()
        try:
            open_gates(gateway_settings, task_ids)

            async def all_succeeded() -> bool:
                states = [await state_of(client, task_id) for task_id in task_ids]
                return states == ["succeeded"] * HELD

            await eventually(all_succeeded, timeout_s=BOUND_S)
            for task_id in task_ids:
                result = (await client.get(f"/tasks/{task_id}")).json()["result"]
                assert result["finished_by_pid"] == helper.process.pid
            print(
                f"\n{HELD} tasks of a stopped worker finished elsewhere "
                f"{time.monotonic() - stopped_at:.1f} s after SIGSTOP (TASK_LEASE_S={LEASE_S})"
            )
            before = {task_id: await states_of(client, task_id) for task_id in task_ids}
        finally:
            stopped.process.send_signal(signal.SIGCONT)

        for task_id, states in before.items():
            # Prefetched ones too. (A live worker whose loop stalls past its lease may lose a
            # task too: stuck again, still one outcome.)
            assert "stuck" in states, (task_id, states)
            assert [s for s in states if s in ("succeeded", "failed", "dead")] == ["succeeded"]

        async def all_dropped() -> bool:
            return stopped.log().count("taken over by another worker; dropped here") == HELD

        await eventually(all_dropped, timeout_s=60)
        assert "Traceback" not in stopped.log(), stopped.log()
        # Its deliveries were acked: with both workers gone, nothing went back to the queue.
        for worker in (helper, stopped):
            assert await worker.terminate() == 0, worker.log()
        assert await ready_messages(amqp_url, gateway_settings.upload_kind) == 0
        # Nothing more was recorded for the tasks: it neither ran nor finished them again.
        for task_id, states in before.items():
            assert await states_of(client, task_id) == states


async def ready_messages(amqp_url: str, kind: str) -> int:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(task_queue(kind), passive=True)
        return int(queue.declaration_result.message_count or 0)


async def consuming(worker: ChildProcess) -> bool:
    return "consuming" in worker.log()


def running(event) -> bool:  # type: ignore[no-untyped-def]
    return event.event == "running"


async def state_of(client: httpx.AsyncClient, task_id: str) -> str:
    response = await client.get(f"/tasks/{task_id}")
    return str(response.json()["state"])


async def states_of(client: httpx.AsyncClient, task_id: str) -> list[str]:
    return [event.event for event in await read_stream(client, f"/tasks/{task_id}/events")]
