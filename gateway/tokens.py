"""Signed access tokens: who is calling, until when (JWT, HS256, signed with SECRET_KEY).

A token carries the user id (``sub``) and an expiry (``exp``); nothing else is
trusted from it. API clients send it as ``Authorization: Bearer <token>``;
browsers get it in an HttpOnly cookie (an EventSource cannot send headers, and
tokens in URLs end up in logs).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import jwt

ALGORITHM = "HS256"
# HS256 keys shorter than the hash are weak (RFC 7518 §3.2).
MIN_SECRET_BYTES = 32


class InvalidToken(Exception):
    """Missing, malformed, forged or expired."""


@dataclass(frozen=True, slots=True)
class Claims:
    user_id: str
    expires_at: float


def check_secret(secret: str) -> None:
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise ValueError(f"SECRET_KEY must be at least {MIN_SECRET_BYTES} bytes")


def mint(secret: str, user_id: str, *, ttl_s: float, now: float | None = None) -> str:
    """A token for ``user_id`` valid for ``ttl_s`` seconds."""
    check_secret(secret)
    issued = time.time() if now is None else now
    claims = {"sub": user_id, "iat": int(issued), "exp": int(issued + ttl_s)}
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify(secret: str, token: str) -> Claims:
    """The token's claims; InvalidToken unless it is well-formed, signed with ``secret``
    and not expired."""
    try:
        claims = jwt.decode(
            token, secret, algorithms=[ALGORITHM], options={"require": ["sub", "exp"]}
        )
    except jwt.ExpiredSignatureError:
        raise InvalidToken("the token has expired") from None
    except jwt.InvalidTokenError as exc:
        raise InvalidToken(f"invalid token: {exc}") from None
    user_id = claims["sub"]
    if not isinstance(user_id, str) or not user_id:
        raise InvalidToken("invalid token: no user")
    return Claims(user_id=user_id, expires_at=float(claims["exp"]))
