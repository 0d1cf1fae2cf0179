"""Reading JSON request bodies: bounded in size and depth, decoded and validated by msgspec.

msgspec recurses once per nesting level and stops at Python's recursion limit
with a ``RecursionError`` (its maintainers leave the bound to the caller,
msgspec#1033). Here every body is held to ``MAX_JSON_DEPTH``, well inside what
any decoder downstream (an RPC server decoding the same bytes) can take, and
too deep is a 400 like any other malformed body.
"""

from __future__ import annotations

import itertools
import re
from typing import Any, TypeVar

import msgspec
from starlette.requests import Request

from .errors import HttpError

T = TypeVar("T")

MAX_JSON_BYTES = 64 * 1024
MAX_JSON_DEPTH = 64

# Any JSON value, for bodies that are passed on as they are.
ANY_JSON: msgspec.json.Decoder[Any] = msgspec.json.Decoder()

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_BRACKETS = b"[]{}"
# "[" and "{" become +1, "]" and "}" -1 (as signed bytes), anything else is deleted.
_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_OTHER = bytes(set(range(256)) - set(_BRACKETS))


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
    """400 for malformed or too deep JSON; 422 with the path of the bad field for invalid JSON."""
    # Fewer brackets than the bound cannot nest too deep: nearly every body skips the check.
    if body.count(b"[") + body.count(b"{") > MAX_JSON_DEPTH:
        _check_depth(body)
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise HttpError(422, "invalid_body", str(exc), path=_path(str(exc))) from None
    except msgspec.DecodeError as exc:
        raise _malformed(exc) from None


def _check_depth(body: bytes) -> None:
    try:
        ANY_JSON.decode(body)
    except RecursionError:
        raise _too_deep() from None
    except msgspec.DecodeError as exc:
        raise _malformed(exc) from None
    # Only on well-formed JSON can a regular expression tell strings from brackets in one pass.
    if _depth(body) > MAX_JSON_DEPTH:
        raise _too_deep()


def _depth(body: bytes) -> int:
    """How deep the arrays and objects of well-formed JSON nest (brackets in strings aside)."""
    steps = memoryview(_STRING.sub(b"", body).translate(_STEPS, _OTHER)).cast("b")
    return max(itertools.accumulate(steps), default=0)


def _malformed(exc: msgspec.DecodeError) -> HttpError:
    return HttpError(400, "malformed_json", f"malformed JSON: {exc}")


def _too_deep() -> HttpError:
    return HttpError(
        400, "json_too_deep", f"the JSON nests deeper than {MAX_JSON_DEPTH} arrays and objects"
    )


def _path(message: str) -> str | None:
    """``$.lines[0].quantity`` from msgspec's "... - at `$.lines[0].quantity`"."""
    marker = "at `"
    if marker not in message:
        return None
    return message.rsplit(marker, 1)[1].rstrip("`")
