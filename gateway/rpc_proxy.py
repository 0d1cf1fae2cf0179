"""``POST /rpc/{method}``: synchronous-style RPC over HTTP, for an allow-list of public methods.

The body is the method's parameters (JSON); the answer is its result (JSON),
or an error mapped by ``rpc_errors``. Any method not on the list is a 404, so
internal methods stay internal.
"""

from __future__ import annotations

from typing import Literal

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from rpc.errors import RpcError
from workers.shop.contracts import Cart, Quote, StockLevels, StockQuery

from .auth import authenticate
from .bodies import ANY_JSON, decode_json, read_body
from .errors import HttpError
from .openapi import documented
from .rpc_errors import http_error

PUBLIC_METHODS = frozenset({"orders.quote", "inventory.check"})


@documented(
    "Call a public RPC method",
    responses={200: (Quote, StockLevels)},
    body=(Cart, StockQuery),
    errors=(404, 502, 504),
    path={"method": Literal[tuple(sorted(PUBLIC_METHODS))]},
)
async def call_method(request: Request) -> Response:
    authenticate(request)
    method = request.path_params["method"]
    if method not in PUBLIC_METHODS:
        raise HttpError(404, "not_found", f"no public method {method!r}")
    body = await read_body(request)
    decode_json(body or b"{}", ANY_JSON)  # 400 if malformed or too deep
    try:
        result = await request.app.state.broker.client.call(
            method, msgspec.Raw(body or b"{}"), response_type=msgspec.Raw
        )
    except RpcError as exc:
        raise http_error(exc) from None
    return Response(bytes(result), media_type="application/json")
