"""Signed access tokens: who is calling, until when, and whether they are an admin.

taskgate's own tokens are JWTs signed with ``SECRET_KEY`` (HS256), carrying the
user id (``sub``), an expiry (``exp``), a token id (``jti``, by which it can be
revoked) and, for admins, ``"roles": ["admin"]``; nothing else is trusted from them. Tokens of an
identity provider (RS256/ES256, verified against its JWKS) are
``gateway.jwks``'s. API clients send a token as ``Authorization: Bearer``;
browsers trade it for a session cookie (``gateway.sessions``).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt

ALGORITHM = "HS256"
# HS256 keys shorter than the hash are weak (RFC 7518 §3.2).
MIN_SECRET_BYTES = 32
# The claim and role that make one of our own tokens an admin's.
ROLES_CLAIM = "roles"
ADMIN_ROLE = "admin"


class InvalidToken(Exception):
    """Missing, malformed, forged or expired."""


@dataclass(frozen=True, slots=True)
class Claims:
    user_id: str
    expires_at: float
    # May broadcast notifications.
    admin: bool = False
    # The stored key of the session the caller came with (the cookie), None for a Bearer token.
    session: str | None = None
    # The token's ``jti``, by which it can be revoked (``DELETE /session`` with it as Bearer).
    token_id: str | None = None


def check_secret(secret: str) -> None:
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise ValueError(f"SECRET_KEY must be at least {MIN_SECRET_BYTES} bytes")


def mint(
    secret: str, user_id: str, *, ttl_s: float, now: float | None = None, admin: bool = False
) -> str:
    """A token for ``user_id`` valid for ``ttl_s`` seconds (an admin's with ``admin``)."""
    check_secret(secret)
    issued = time.time() if now is None else now
    claims: dict[str, Any] = {
        "sub": user_id,
        "iat": int(issued),
        "exp": int(issued + ttl_s),
        "jti": uuid.uuid4().hex,
    }
    if admin:
        claims[ROLES_CLAIM] = [ADMIN_ROLE]
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
    return claims_of(claims, roles_claim=ROLES_CLAIM, admin_role=ADMIN_ROLE)


def claims_of(payload: Mapping[str, Any], *, roles_claim: str, admin_role: str) -> Claims:
    """``Claims`` from a verified payload; ``roles_claim`` may be a dotted path
    (``realm_access.roles``) to a list of roles or a space-separated string."""
    user_id = payload.get("sub")
    if not isinstance(user_id, str) or not user_id:
        raise InvalidToken("invalid token: no user")
    roles: Any = payload
    for part in roles_claim.split("."):
        roles = roles.get(part) if isinstance(roles, Mapping) else None
    if isinstance(roles, str):
        roles = roles.split()
    admin = isinstance(roles, list) and admin_role in roles
    token_id = payload.get("jti")
    return Claims(
        user_id=user_id,
        expires_at=float(payload["exp"]),
        admin=admin,
        token_id=token_id if isinstance(token_id, str) and token_id else None,
    )


def algorithm_of(token: str) -> str:
    """The ``alg`` the token's (unverified) header names."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError as exc:
        raise InvalidToken(f"invalid token: {exc}") from None
    algorithm = header.get("alg")
    if not isinstance(algorithm, str):
        raise InvalidToken("invalid token: no algorithm")
    return algorithm
