"""RPC under restarts: server processes, SIGTERM, and the broker itself."""

from __future__ import annotations

import asyncio

import rpc

from ..helpers import eventually, unreachable_amqp_url

RECOVERABLE = (rpc.RpcNoServer, rpc.RpcTimeout, rpc.BrokerUnavailable)


async def wait_until_served(client: rpc.RpcClient, process, timeout_s: float = 60) -> None:
    async def answers() -> bool:
        assert process.process.poll() is None, "the server process died"
        try:
            return await client.call("proc.echo", {"n": -1}, timeout_s=2) == {"n": -1}
        except RECOVERABLE:
            return False

    await eventually(answers, timeout_s=timeout_s)


async def test_runner_serves_module_attribute_and_sigterm_exits_zero(client, server_process):
    process = server_process()
    await wait_until_served(client, process)

    pong = await client.call("system.ping")
    assert (pong["pong"], pong["server"]) == (True, "test-subprocess")
    process.terminate()

    assert await process.wait() == 0


async def test_sigterm_finishes_calls_in_flight_before_exiting(client, server_process):
    process = server_process()
    await wait_until_served(client, process)

    call = asyncio.ensure_future(client.call("proc.slow", {"n": 7, "seconds": 1.0}, timeout_s=30))
    await process.wait_for_output("started 7")
    process.terminate()

    assert await call == {"n": 7}
    assert await process.wait() == 0


async def test_server_restarted_mid_traffic_every_answer_is_right_and_calls_resume(
    client, server_process
):
    first = server_process()
    await wait_until_served(client, first)
    answered: list[int] = []
    failures: list[BaseException] = []
    stop = asyncio.Event()

    async def traffic(worker: int) -> None:
        n = worker
        while not stop.is_set():
            try:
                reply = await client.call("proc.echo", {"n": n}, timeout_s=5)
            except RECOVERABLE as exc:
                failures.append(exc)
                await asyncio.sleep(0.05)  # back off while no server is up
                continue
            assert reply == {"n": n}, "a reply reached the wrong caller"
            answered.append(n)
            n += 16

    workers = [asyncio.ensure_future(traffic(w)) for w in range(16)]
    await eventually(lambda: _at_least(answered, 200))
    first.terminate()
    assert await first.wait() == 0
    server_process()
    served_before_restart = len(answered)
    await eventually(lambda: _at_least(answered, served_before_restart + 200))
    stop.set()
    await asyncio.gather(*workers)

    assert all(isinstance(f, RECOVERABLE) for f in failures)


async def _at_least(items: list, count: int) -> bool:
    return len(items) >= count


async def test_broker_restart_mid_traffic_client_and_server_recover(
    serve, client, unique_name, restart_broker
):
    method = unique_name("echo")
    server = rpc.RpcServer("survivor")

    @server.method(method)
    async def echo(params: dict) -> dict:
        return params

    await serve(server)
    assert await client.call(method, {"n": 0}) == {"n": 0}
    in_flight = [
        asyncio.ensure_future(client.call(method, {"n": n}, timeout_s=60)) for n in range(50)
    ]

    await restart_broker()

    # Calls caught by the restart end promptly with an error or their answer, never hang.
    for n, result in enumerate(await asyncio.gather(*in_flight, return_exceptions=True)):
        assert result == {"n": n} or isinstance(result, RECOVERABLE)

    async def recovered() -> bool:
        try:
            return await client.call(method, {"n": 1}, timeout_s=2) == {"n": 1}
        except RECOVERABLE:
            return False

    await eventually(recovered, timeout_s=60)
    replies = await asyncio.gather(*(client.call(method, {"n": n}) for n in range(100)))
    assert replies == [{"n": n} for n in range(100)]


async def test_server_process_waits_for_an_absent_broker_and_stops_cleanly():
    from .conftest import ServerProcess

    process = ServerProcess(unreachable_amqp_url())
    try:
        await process.wait_for_output("retrying")
        process.terminate()
        assert await process.wait() == 0
    finally:
        process.kill()
