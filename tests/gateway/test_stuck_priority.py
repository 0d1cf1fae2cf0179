"""The stuck-task watchdog puts a task back at the priority it came with (issue 18, point 3)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gateway.outbox import OUTBOX_MIGRATIONS, claim_due
from gateway.outbox_relay import OutboxRelay
from gateway.publisher import Publisher
from gateway.stuck import TASK_SCOPE, StuckTaskSweeper
from gateway.task_store import DatabaseTaskStore
from infra.database import Database
from workers import claims
from workers.topology import Priority, task_routing_key


@pytest.fixture
async def database(database: Database) -> Database:
    """tests/conftest.py's fresh store (SQLite and PostgreSQL) with the tables the watchdog uses."""
    await DatabaseTaskStore.open(database)
    await database.migrate("outbox", OUTBOX_MIGRATIONS)
    await database.migrate(claims.COMPONENT, claims.MIGRATIONS)
    return database


@pytest.fixture
async def sweeper(database: Database) -> AsyncIterator[StuckTaskSweeper]:
    # Never started: the entries stay in the outbox to be read, and the stuck events'
    # fan-out finds no broker (streams would read them from the store).
    publisher = Publisher(queue_max_length=10, timeout_s=1)
    relay = OutboxRelay(database, publisher, lease_s=30, poll_s=1, retry_max_s=1)
    yield StuckTaskSweeper(database, relay, publisher, lease_s=1.0, name="watchdog")
    await publisher.close()


@pytest.mark.parametrize("priority", ["high", "normal"])
async def test_a_stuck_task_goes_back_to_the_queue_of_its_priority(
    database: Database, sweeper: StuckTaskSweeper, priority: Priority
) -> None:
    held = claims.Held("k", b'{"task_id": "t1", "kind": "k"}', 1, priority)
    await database.write(lambda tx: claims.take(tx, TASK_SCOPE, "t1", "gone", 1.0, 1.0, held))

    assert await sweeper.sweep() == ["t1"]

    entries = await database.write(
        lambda tx: claim_due(tx, database.dialect, relay="reader", lease_s=60, limit=10)
    )
    assert [(e.message_id, e.routing_key) for e in entries] == [
        ("t1", task_routing_key("k", priority))
    ]
