"""The RPC services taskgate serves out of the box: ``python -m rpc workers.services:server``.

Order pricing and stock (``orders.quote``, ``inventory.check``) arrive with the
orders pipeline; until then the server answers the built-in ``system.ping``.
"""

from __future__ import annotations

from rpc import RpcServer

server = RpcServer("services")
