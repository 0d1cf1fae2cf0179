"""Dead queues on the real broker: quorum queues that keep their letters however often looked at."""

from __future__ import annotations

import rpc
from workers.dead import peek
from workers.topology import dead_queue, declare_dead_queue

LOOKS = 5


async def test_dead_letters_looked_at_again_and_again_are_all_there_each_time_in_order(
    connection, kinds
):
    """A quorum queue takes back what a closed channel held only once it hears the channel
    is gone: a look right after another one found nothing."""
    kind = kinds()
    raw = await connection.raw_channel(publisher_confirms=True)
    try:
        await declare_dead_queue(raw, dead_queue(kind))
        for number in range(3):
            properties = rpc.wire.Properties(message_id=f"letter-{number}")
            confirm = raw.publish(b"{}", routing_key=dead_queue(kind), properties=properties)
            assert confirm is not None and await confirm
    finally:
        await raw.close()

    looks = [await peek(connection, kind) for _ in range(LOOKS)]

    expected = ["letter-0", "letter-1", "letter-2"]
    assert [[m.properties.message_id for m in look] for look in looks] == [expected] * LOOKS
    assert [m.properties.message_id for m in await peek(connection, kind, limit=2)] == expected[:2]
