"""The web process uses the RPC settings it shares with the CLI."""

from __future__ import annotations

from dataclasses import replace

import pytest

from gateway.app import create_app

from ..helpers import eventually

DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"


@pytest.mark.parametrize("reply_mode", ["direct", "queue"])
async def test_the_rpc_client_replies_as_rpc_reply_mode_says(gateway_settings, reply_mode):
    app = create_app(replace(gateway_settings, rpc_reply_mode=reply_mode))
    async with app.router.lifespan_context(app):

        async def connected() -> bool:
            return bool(app.state.broker.ready)

        await eventually(connected, timeout_s=30, interval_s=0.05)
        # Where replies come back: RabbitMQ's direct reply-to, or a queue of our own.
        reply_to = app.state.broker.client._reply_to

    assert (reply_to == DIRECT_REPLY_TO) is (reply_mode == "direct")
