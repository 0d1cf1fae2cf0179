"""GET /metrics: what an operator scrapes."""

from __future__ import annotations

from .conftest import jpeg_bytes, metrics_auth, read_stream, upload


async def test_the_gateway_exposes_its_metrics(gateway_process, worker_process, rpc_process):
    worker_process()
    gateway = gateway_process()
    await gateway.wait_ready()
    async with gateway.client() as client:
        task = (await upload(client, jpeg_bytes())).json()
        await read_stream(client, task["events_url"])
        await client.post("/rpc/orders.quote", json={"lines": [{"sku": "NOPE-1", "quantity": 1}]})
        async with gateway.client(user=None) as anonymous:
            text = (await anonymous.get("/metrics", headers=metrics_auth(gateway.settings))).text

    kind = gateway.settings.upload_kind
    assert f'taskgate_tasks_accepted_total{{kind="{kind}"}} 1.0' in text
    assert f'taskgate_tasks_finished_total{{kind="{kind}",state="succeeded"}} 1.0' in text
    assert 'taskgate_rpc_client_seconds_count{method="orders.quote",outcome="UnknownSku"} 1.0' in (
        text
    )
    assert "taskgate_events_delivered_total" in text
    assert "taskgate_upload_bytes_total" in text
    assert "taskgate_sse_connections 0.0" in text
