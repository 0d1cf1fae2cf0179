"""``taskgate call``: RPC from the shell against a real rpc process."""

from __future__ import annotations

import json

from .conftest import taskgate

QUOTE_MUGS = json.dumps({"lines": [{"sku": "MUG-01", "quantity": 2}]})


async def test_call_prints_the_result_as_json(amqp_url, rpc_process):
    result = await taskgate("call", "orders.quote", QUOTE_MUGS, env={"AMQP_URL": amqp_url})

    assert result.code == 0, result.stderr
    quote = json.loads(result.stdout)
    assert [(line["sku"], line["quantity"]) for line in quote["lines"]] == [("MUG-01", 2)]
    assert quote["total_cents"] == (
        quote["subtotal_cents"] + quote["tax_cents"] + quote["shipping_cents"]
    )
    assert result.stdout.startswith("{\n  ")  # pretty, for people


async def test_a_service_error_goes_to_stderr_with_exit_1(amqp_url, rpc_process):
    params = json.dumps({"lines": [{"sku": "NO-SUCH-SKU", "quantity": 1}]})

    result = await taskgate("call", "orders.quote", params, env={"AMQP_URL": amqp_url})

    assert result.code == 1
    assert result.stdout == ""
    assert "UnknownSku" in result.stderr
    assert "NO-SUCH-SKU" in result.stderr


async def test_a_method_nobody_serves_fails_at_once(amqp_url, unique_name):
    method = unique_name("nobody")

    result = await taskgate("call", method, "{}", "--timeout", "30", env={"AMQP_URL": amqp_url})

    assert result.code == 1
    assert f"no server for {method!r}" in result.stderr


async def test_json_that_does_not_parse_is_bad_usage():
    # No broker needed: the parameters are checked before connecting.
    result = await taskgate("call", "orders.quote", "{lines: [", env={"AMQP_URL": "amqp://x"})

    assert result.code == 2
    assert "JSON does not parse" in result.stderr


async def test_parameters_must_be_a_json_object():
    result = await taskgate("call", "orders.quote", "[1, 2]")

    assert result.code == 2
    assert "must be a JSON object" in result.stderr
