"""The runtime across a broker restart: durable tasks survive, consumers and listeners return."""

from __future__ import annotations

import pytest

from rpc.errors import BrokerUnavailable
from workers import TaskContext, TaskRegistry, WaitTimeout

from .conftest import eventually


def echo_registry(kind: str) -> TaskRegistry:
    registry = TaskRegistry()

    @registry.task(kind)
    async def echo(ctx: TaskContext, payload: int) -> int:
        return payload

    return registry


@pytest.mark.broker_restart
async def test_task_queued_across_a_broker_restart_is_kept_and_workers_resume(
    kinds, start_worker, submitter, restart_broker
):
    probe_kind, queued_kind = kinds("probe"), kinds("queued")
    await start_worker(echo_registry(probe_kind))
    queued_id = await submitter.submit(queued_kind, 7)  # no worker for it yet

    await restart_broker()

    async def probe_round_trips() -> bool:
        try:
            outcome = await submitter.submit_and_wait(probe_kind, 1, timeout_s=2)
        except (BrokerUnavailable, WaitTimeout):
            return False
        return outcome.result == 1

    await eventually(probe_round_trips)
    await start_worker(echo_registry(queued_kind))
    outcome = await submitter.wait(queued_id, timeout_s=30)
    assert (outcome.state, outcome.result) == ("succeeded", 7)
