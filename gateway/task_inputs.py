"""What each accepted task was asked to do, kept so that it can be retried.

A task message leaves the outbox once the broker has it, and a failed or
cancelled task's message is gone; a retry (``gateway/admin/retry.py``) needs
its body. So accepting a task keeps its message and priority here, in the
accepting transaction, until the retention forgets the task. A retry's row
names the task it retries (``retry_of``, unique: one retry per task, so a
second click gets the same one).
"""

from __future__ import annotations

from dataclasses import dataclass

from infra.database import Migration, Transaction
from workers.messages import TaskMessage, encoder
from workers.topology import Priority

COMPONENT = "task_inputs"
MIGRATIONS: list[Migration] = [
    "CREATE TABLE task_inputs ("
    " task_id TEXT PRIMARY KEY, body BYTEA NOT NULL, priority TEXT NOT NULL,"
    " retry_of TEXT UNIQUE)",
]


@dataclass(frozen=True, slots=True)
class TaskInput:
    body: bytes
    priority: Priority
    retry_of: str | None


async def keep(
    tx: Transaction, message: TaskMessage, priority: Priority, *, retry_of: str | None = None
) -> bool:
    """Keep ``message``'s input in the caller's transaction; False if ``retry_of`` has a
    retry already (nothing kept)."""
    added = await tx.execute(
        "INSERT INTO task_inputs (task_id, body, priority, retry_of) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT DO NOTHING",
        message.task_id,
        encoder.encode(message),
        priority,
        retry_of,
    )
    return added > 0


async def get(tx: Transaction, task_id: str) -> TaskInput | None:
    row = await tx.fetchrow(
        "SELECT body, priority, retry_of FROM task_inputs WHERE task_id = $1", task_id
    )
    return None if row is None else TaskInput(bytes(row[0]), row[1], row[2])


async def retry_of(tx: Transaction, task_id: str) -> str | None:
    """The task that retries ``task_id``, if one does."""
    value = await tx.fetchval("SELECT task_id FROM task_inputs WHERE retry_of = $1", task_id)
    return None if value is None else str(value)


async def forget(tx: Transaction, task_ids: list[str]) -> None:
    await tx.executemany("DELETE FROM task_inputs WHERE task_id = $1", [(t,) for t in task_ids])
