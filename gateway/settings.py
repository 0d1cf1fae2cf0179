"""Gateway settings, read once from the environment at start-up."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from rpc.settings import DEFAULT_AMQP_URL


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    """What the web process needs to know; defaults run on one laptop."""

    amqp_url: str = DEFAULT_AMQP_URL
    reconnect_interval_s: float = 1.0
    rpc_timeout_s: float = 5.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> GatewaySettings:
        env = os.environ if environ is None else environ
        default = cls()
        return cls(
            amqp_url=env.get("AMQP_URL", default.amqp_url),
            reconnect_interval_s=float(
                env.get("AMQP_RECONNECT_INTERVAL_S", default.reconnect_interval_s)
            ),
            rpc_timeout_s=float(env.get("RPC_TIMEOUT_S", default.rpc_timeout_s)),
        )
