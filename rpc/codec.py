"""JSON wire format of RPC requests and replies (msgspec).

A request body is the method's parameters as a JSON object; the method name
travels in the routing key and the message ``type``. A reply body is a tagged
union on ``status``::

    {"status": "ok", "result": ...}
    {"status": "error", "type": "UnknownSku", "message": "no such SKU: X-1"}
"""

from __future__ import annotations

from typing import Any

import msgspec

CONTENT_TYPE = "application/json"


class Ok(msgspec.Struct, tag_field="status", tag="ok"):
    """A successful reply; ``result`` stays raw until the caller decodes it to its type."""

    result: msgspec.Raw


class Error(msgspec.Struct, tag_field="status", tag="error"):
    """An error reply."""

    type: str
    message: str


Reply = Ok | Error

encoder = msgspec.json.Encoder()
_reply_decoder = msgspec.json.Decoder(Reply)
_any_decoder = msgspec.json.Decoder()


def encode(value: Any) -> bytes:
    """Encode a Struct, dict, list or scalar as JSON."""
    return encoder.encode(value)


def encode_ok(result: Any) -> bytes:
    """Encode a successful reply."""
    # Splicing bytes saves building an Ok and a Raw per reply on the hot path.
    return b'{"status":"ok","result":' + encoder.encode(result) + b"}"


def encode_error(type: str, message: str) -> bytes:
    """Encode an error reply."""
    return encoder.encode(Error(type, message))


def decode_reply(body: bytes) -> Ok | Error:
    """Decode a reply envelope; raises ``msgspec.DecodeError`` on a malformed one."""
    return _reply_decoder.decode(body)


def decode_any(body: bytes | msgspec.Raw) -> Any:
    """Decode JSON into builtin Python objects."""
    return _any_decoder.decode(body)
