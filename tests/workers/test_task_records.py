"""A cancel decided in the store (workers.task_records) against workers starting the task, on
SQLite and PostgreSQL: either the task runs and the cancel is a request, or it never runs."""

from __future__ import annotations

import asyncio
import time

from infra.database import Database
from workers import task_records
from workers.messages import new_event
from workers.outcomes import OutcomeLog


async def cancel(database: Database, task_id: str, holder: str) -> task_records.CancelResult:
    event = new_event("k", task_id, "cancelled", 1, error="cancelled by ada")
    return await database.write(
        lambda tx: task_records.cancel(tx, event, holder=holder, now_s=time.time())
    )


async def test_a_cancel_and_a_start_at_once_agree_on_which_came_first(database: Database) -> None:
    await task_records.migrate(database)
    log = await OutcomeLog.open(database, holder="worker")
    try:
        for n in range(20):
            task_id = f"t{n:02d}"
            start, result = await asyncio.gather(
                log.start(task_id), cancel(database, task_id, f"cancel-{n}")
            )
            if start.run:  # the worker first: the cancel is a request it will find
                assert result == "requested", task_id
                found = await database.read(
                    lambda tx, t=task_id: task_records.cancels_requested(tx, [t, "other"])
                )
                assert found == {task_id}
                log.release(task_id, settled=False)
            else:  # the cancel first: the task never runs, now or later
                assert result == "cancelled", (task_id, start)
                assert start.done or start.wait_until_s is not None
                assert (await log.start(task_id)).done
                assert (await log.get(task_id)).state == "cancelled"
    finally:
        await log.close()


async def test_a_task_whose_outcome_is_recorded_is_finished_and_its_outcome_still_goes_out(
    database: Database,
) -> None:
    """Recorded but perhaps not published (its worker died): a later copy republishes it."""
    await task_records.migrate(database)
    log = await OutcomeLog.open(database, holder="worker", lease_s=30)
    try:
        assert (await log.start("t1")).run
        outcome = await log.record(new_event("k", "t1", "succeeded", 1))
        log.release("t1", settled=False)  # died before publishing: only the lease ends
        await log.close()
        log = await OutcomeLog.open(database, holder="worker-2", lease_s=30)

        assert await cancel(database, "t1", "cancel") == "finished"
        assert (await log.start("t1")).republish == outcome
    finally:
        await log.close()


async def test_forgetting_a_task_removes_every_record_of_it(database: Database) -> None:
    await task_records.migrate(database)
    log = await OutcomeLog.open(database, holder="worker")
    try:
        assert (await log.start("t1")).run
        assert await cancel(database, "t1", "cancel") == "requested"
        await log.record(new_event("k", "t1", "cancelled", 1))
        log.release("t1", settled=False)
        await log.close()

        await database.write(lambda tx: task_records.forget(tx, ["t1"]))

        for table in ("task_outcomes", "task_cancels", "worker_claims"):
            column = "item_id" if table == "worker_claims" else "task_id"
            sql = f"SELECT count(*) FROM {table} WHERE {column} = 't1'"
            assert await database.read(lambda tx, sql=sql: tx.fetchval(sql)) == 0, table
    finally:
        await log.close()
