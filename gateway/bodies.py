"""Reading JSON request bodies: bounded in size, decoded and validated by msgspec."""

from __future__ import annotations

from typing import TypeVar

import msgspec
from starlette.requests import Request

from .errors import HttpError

T = TypeVar("T")

MAX_JSON_BYTES = 64 * 1024


async def read_body(request: Request, max_bytes: int = MAX_JSON_BYTES) -> bytes:
    """The body, refused with 413 as soon as it passes ``max_bytes``."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise HttpError(413, "body_too_large", f"the body is larger than {max_bytes} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise HttpError(413, "body_too_large", f"the body is larger than {max_bytes} bytes")
    return bytes(body)


def decode_json(body: bytes, decoder: msgspec.json.Decoder[T]) -> T:
    """400 for malformed JSON; 422 with the path of the bad field for invalid JSON."""
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise HttpError(422, "invalid_body", str(exc), path=_path(str(exc))) from None
    except msgspec.DecodeError as exc:
        raise HttpError(400, "malformed_json", f"malformed JSON: {exc}") from None


def _path(message: str) -> str | None:
    """``$.lines[0].quantity`` from msgspec's "... - at `$.lines[0].quantity`"."""
    marker = "at `"
    if marker not in message:
        return None
    return message.rsplit(marker, 1)[1].rstrip("`")
