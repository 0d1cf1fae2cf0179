"""An RPC method and a call to it: python docs/examples/pricing.py

Serve the method on its own with ``python -m rpc pricing:server`` (run from this
folder): it serves until SIGTERM, then finishes the calls in flight.
"""

import asyncio
import os

import msgspec

import rpc


class Cart(msgspec.Struct):
    sku: str
    quantity: int


class OutOfStock(rpc.ServiceError):
    """Fewer units left than the cart asks for."""


server = rpc.RpcServer("pricing")


@server.method("pricing.quote")
async def quote(cart: Cart) -> dict:  # the request body is validated against Cart
    if cart.quantity > 10:
        raise OutOfStock("only 10 left")
    return {"total_cents": 250 * cart.quantity}


async def main() -> None:
    amqp_url = os.environ["AMQP_URL"]  # the private node's: "$(scripts/broker url)"
    connection = await rpc.connect_wire(amqp_url, name="pricing")  # reconnects by itself
    await server.start(connection)
    async with await rpc.RpcClient.create(connection) as client:
        print(await client.call("pricing.quote", Cart("A-1", 2), timeout_s=5))
        try:
            await client.call("pricing.quote", Cart("A-1", 11), timeout_s=5)
        except rpc.RemoteError as error:
            print(f"{error.type}: {error.message}")
    await server.stop()
    await connection.close()


if __name__ == "__main__":
    asyncio.run(main())
