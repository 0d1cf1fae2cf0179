"""A task kind, a worker that runs it and a submitter that waits for it:
python docs/examples/reports.py

Run the kind in worker processes with ``python -m workers --tasks reports:registry``
(from this folder) and submit from anywhere with a TaskSubmitter.
"""

import asyncio

import rpc
from workers import TaskRegistry, TaskSubmitter, Worker, WorkerSettings, report_progress

registry = TaskRegistry()


@registry.task("reports.build")
async def build(ctx, payload: dict) -> dict:
    await ctx.progress(10, "querying")  # published and confirmed before it returns
    rows = await ctx.run_in_process(crunch, payload["month"])  # CPU-bound: the process pool
    return {"month": payload["month"], "rows": rows}


def crunch(month: str) -> int:  # runs in a pool process
    for step in range(1, 5):
        report_progress(10 + 20 * step, f"step {step} of 4")  # becomes a progress event
    return 42


async def main() -> None:
    settings = WorkerSettings.from_env()  # AMQP_URL, STORAGE_DIR, WORKER_PROCESSES, ...
    connection = await rpc.connect_wire(settings.amqp_url, name="reports")
    worker = Worker(registry, settings)
    await worker.start(connection)
    async with await TaskSubmitter.create(connection) as submitter:
        task_id = await submitter.submit("reports.build", {"month": "2026-11"})
        outcome = await submitter.wait(task_id, timeout_s=30)  # the terminal StatusEvent
        print(outcome.state, outcome.result)
    await worker.stop()
    await connection.close()


if __name__ == "__main__":
    asyncio.run(main())
