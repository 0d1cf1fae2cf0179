"""The live feed: recorded status events, with their sequence numbers, to this process's hub.

Each gateway has one exclusive auto-delete queue bound to the
``status.recorded`` fanout, where whichever process recorded an event
(gateway/recorder.py) publishes it once, with ``<task_id>.<seq>.<state>`` as
its routing key. Nothing here writes to the store: the hub gets each event as
it was numbered.

Only what a gateway published is taken (``user_id``, workers/senders.py);
anything else is dropped with a warning: the live queue is a no-ack copy, and
the store holds the events themselves.

While the queue is gone (a lost connection), events go by unseen: after every
(re)connect the hub tells each stream to read the store again, and a stream
that sees a gap in the numbers reads it anyway (gateway/streams.py).
"""

from __future__ import annotations

import logging

from rpc.connection import close_channels
from rpc.wire import Channel, Delivery, RobustChannel, WireConnection
from workers.senders import gateway_senders
from workers.topology import STATUS_RECORDED_EXCHANGE, declare_recorded

from .hub import Hub
from .store import StoredEvent

logger = logging.getLogger(__name__)

# Recorded events the live queue holds before the broker drops the oldest: a process
# too far behind loses live events, and its streams catch up from the store on a gap.
LIVE_QUEUE_MAX_LENGTH = 100_000


class LiveFeed:
    """This process's live queue on ``status.recorded``; create, then ``await start(conn)``."""

    def __init__(self, hub: Hub) -> None:
        self._hub = hub
        self._channel: RobustChannel | None = None
        self._consuming = False
        self._senders = gateway_senders(None)

    @property
    def ready(self) -> bool:
        return self._consuming and self._channel is not None and not self._channel.is_closed

    async def start(self, connection: WireConnection) -> None:
        self._senders = gateway_senders(connection.user_id)
        self._channel = await connection.open_channel(self._consume, on_lost=self._lost)

    async def close(self) -> None:
        await close_channels(self._channel)

    async def _consume(self, channel: Channel) -> None:
        """Declare, bind and consume the live queue; runs again after every reconnect."""
        await declare_recorded(channel)
        live = await channel.queue_declare(
            "", exclusive=True, auto_delete=True, arguments={"x-max-length": LIVE_QUEUE_MAX_LENGTH}
        )
        assert live.queue is not None
        await channel.queue_bind(live.queue, STATUS_RECORDED_EXCHANGE)
        await channel.basic_consume(live.queue, self._on_recorded, no_ack=True, exclusive=True)
        if self._consuming:
            logger.info("live feed back; streams re-read the store")
        self._consuming = True
        # Events recorded while this queue was gone reach the streams only from the store.
        self._hub.resync()

    def _lost(self, exc: BaseException | None) -> None:
        self._consuming = False

    def _on_recorded(self, message: Delivery) -> None:
        refused = self._senders.refusal(message.properties)
        if refused is not None:
            logger.warning("dropping a recorded event (%r): %s", message.routing_key[:100], refused)
            return
        task_id, _, rest = message.routing_key.partition(".")
        seq, _, state = rest.partition(".")
        if not (seq.isdigit() and state):
            logger.warning("not a recorded event's routing key: %r", message.routing_key)
            return
        self._hub.publish(StoredEvent(task_id, int(seq), state, message.body))
