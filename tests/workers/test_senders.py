"""A worker runs a task only if the gateway or a worker sent it (user_id, workers/senders.py)."""

from __future__ import annotations

import msgspec

from rpc.connection import connect_wire
from rpc.wire import Properties
from workers import TaskContext, TaskRegistry
from workers.dead import replay
from workers.messages import TaskMessage, encoder
from workers.senders import Senders
from workers.topology import REASON_HEADER

from .conftest import eventually, get_dead_letters

TIMEOUT_S = 30


class Steps(msgspec.Struct):
    steps: int


async def test_a_task_the_rpc_user_puts_in_a_task_queue_is_dead_lettered_unrun(
    kinds, start_worker, submitter, connection, role_urls, settings
):
    """Issue 16: the rpc user fed tasks.images.thumbnail through the default exchange."""
    kind = kinds()
    registry = TaskRegistry()
    ran: list[str] = []

    @registry.task(kind)
    async def count(ctx: TaskContext, payload: Steps) -> int:
        ran.append(ctx.task_id)
        return payload.steps

    await start_worker(registry)
    forger = await connect_wire(role_urls["rpc"], name="test-forger")
    raw = await forger.raw_channel(publisher_confirms=True)
    forged = TaskMessage(task_id="forged1", kind=kind, payload=msgspec.Raw(b'{"steps": 1}'))
    await raw.basic_publish(
        encoder.encode(forged),
        routing_key=f"tasks.{kind}",  # through amq.default, which the rpc user writes to
        properties=Properties(message_id="forged1", delivery_mode=2),
    )
    await forger.close()

    outcome = await submitter.submit_and_wait(kind, {"steps": 2}, timeout_s=TIMEOUT_S)

    assert (outcome.state, outcome.result) == ("succeeded", 2)  # the worker keeps serving
    letters: list = []

    async def buried() -> bool:
        letters.extend(await get_dead_letters(connection, kind))
        return bool(letters)

    await eventually(buried, timeout_s=TIMEOUT_S)
    reason = (letters[0].properties.headers or {})[REASON_HEADER]
    reason = reason.decode() if isinstance(reason, bytes) else reason
    assert reason.startswith("untrusted sender: user_id 'rpc'")
    assert "forged1" not in ran
    # The dead letter is the worker's copy, but it says whose message it copies: replaying
    # all of the kind's dead letters must not launder the forgery into a trusted task.
    left: list[tuple[str, str]] = []
    replayed = await replay(
        connection,
        kind,
        max_length=settings.queue_max_length,
        on_left=lambda label, why: left.append((label, why)),
    )
    assert replayed == 0
    [(label, why)] = left
    assert label == "forged1"
    assert why.startswith("it copies a message from an untrusted sender: user_id 'rpc'")
    assert [m.properties.message_id for m in await get_dead_letters(connection, kind)] == [
        "forged1"
    ]


def test_a_message_without_user_id_or_from_another_user_is_refused_with_why():
    senders = Senders(("web", "worker"), "worker")

    assert senders.refusal(Properties(user_id="web")) is None
    assert senders.refusal(Properties()) == (
        "untrusted sender: no user_id (only 'web' or 'worker' may send this)"
    )
    assert senders.refusal(Properties(user_id="rpc")) == (
        "untrusted sender: user_id 'rpc' (only 'web' or 'worker' may send this)"
    )


def test_a_process_logged_in_as_none_of_the_roles_also_trusts_its_own_user():
    """One user for everything (a development broker): everything it meets, it sent."""
    assert Senders(("worker",), "admin").users == {"worker", "admin"}
    assert Senders(("worker",), "web").users == {"worker"}  # a role trusts only its senders
