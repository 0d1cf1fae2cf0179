"""The AsyncAPI document against a running system: what it names, the processes declare."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import pytest

from gateway.asyncapi import document
from tests.helpers import eventually
from workers.settings import WorkerSettings
from workers.shop.contracts import SERVICES


def _fill(name: str, values: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], name)


def _pattern(name: str) -> re.Pattern[str]:
    return re.compile(re.sub(r"\\\{\w+\\\}", ".+", re.escape(name)) + "$")


async def test_every_exchange_and_queue_the_document_names_is_declared_as_it_says(
    broker: Any, gateway_process: Any, worker_process: Any, rpc_process: Any, kind_prefix: str
) -> None:
    if broker.node is None:
        pytest.skip("needs our own node (AMQP_URL is set)")
    worker = worker_process(orders=True)
    gateway = gateway_process()
    await gateway.wait_ready()

    async def worker_ready() -> bool:
        return "ready" in worker.log()

    await eventually(worker_ready, timeout_s=30, interval_s=0.05)

    def listing(what: str, *columns: str) -> list[dict[str, Any]]:
        found = broker.node.rabbitmqctl(what, *columns, "--formatter", "json")
        return list(json.loads(found))

    exchanges = {
        e["name"]: e["type"]
        for e in await asyncio.to_thread(listing, "list_exchanges", "name", "type")
    }
    queues = {q["name"] for q in await asyncio.to_thread(listing, "list_queues", "name")}
    values = {
        "kind": f"{kind_prefix}.gated",
        "delay_ms": str(WorkerSettings().retry_delays_ms[0]),
        "shard": "0",
    }

    expected_exchanges, expected_queues = {}, set()
    for channel in document()["channels"].values():
        amqp = channel.get("bindings", {}).get("amqp", {})
        for service in SERVICES:
            given = {**values, "service": service}
            if amqp.get("is") == "routingKey":
                exchange = amqp["exchange"]
                expected_exchanges[_fill(exchange["name"], given)] = exchange["type"]
            elif amqp.get("is") == "queue":
                expected_queues.add(_fill(amqp["queue"]["name"], given))

    assert {n: exchanges.get(n) for n in expected_exchanges} == expected_exchanges
    assert expected_queues - queues == set()
    # The other way round: every queue of this test's kinds is a channel of the document.
    patterns = [_pattern(c["address"]) for c in document()["channels"].values() if c["address"]]
    ours = {q for q in queues if kind_prefix in q}
    assert len(ours) >= 3
    assert [q for q in ours if not any(p.match(q) for p in patterns)] == []
