"""Idempotency-Key: a client's retry of a request gets what its first try got.

Keys are per user (two users who pick the same key are two requests) and bound
to a hash of the request: the same key with another body is a 409. Orders keep
their key in their own row (``gateway/order_store.py``); uploads keep theirs in
``upload_keys``, next to the task they created, written in the task's transaction.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Annotated

import msgspec
from starlette.requests import Request

from infra.database import Migration, Transaction

from .errors import HttpError

MAX_IDEMPOTENCY_KEY = 200
# The header as the OpenAPI document declares it.
IDEMPOTENCY_HEADER = {
    "Idempotency-Key": Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_IDEMPOTENCY_KEY)]
}

UPLOAD_KEY_MIGRATIONS: Sequence[Migration] = [
    "CREATE TABLE upload_keys ("
    " scoped_key TEXT PRIMARY KEY, request_hash TEXT NOT NULL, task_id TEXT NOT NULL,"
    " created_at DOUBLE PRECISION NOT NULL)",
    # A task's key goes with it when retention removes it (gateway/retention.py).
    "CREATE INDEX IF NOT EXISTS upload_keys_task ON upload_keys (task_id)",
]


class IdempotencyConflict(Exception):
    """An Idempotency-Key was used before with another request body."""

    def __init__(self) -> None:
        super().__init__("this Idempotency-Key was used with another request")


def idempotency_key(request: Request) -> str | None:
    """The request's Idempotency-Key header, if any; 400 if it is empty or too long."""
    key = request.headers.get("idempotency-key")
    if key is not None and not 0 < len(key) <= MAX_IDEMPOTENCY_KEY:
        raise HttpError(
            400,
            "bad_idempotency_key",
            f"Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY} characters",
        )
    return key


def scoped(owner: str, key: str) -> str:
    """The key as stored: per user."""
    return f"{owner}\x1f{key}"


async def claim_upload_key(
    tx: Transaction, owner: str, key: str, request_hash: str, task_id: str
) -> str | None:
    """Bind ``key`` to ``task_id`` in the caller's transaction; the earlier task if it was bound.

    Raises IdempotencyConflict if the key was bound with another request hash.
    ON CONFLICT DO NOTHING: on PostgreSQL a concurrent first use of the key waits
    for the other's commit instead of failing on the unique key.
    """
    inserted = await tx.fetchval(
        "INSERT INTO upload_keys (scoped_key, request_hash, task_id, created_at)"
        " VALUES ($1, $2, $3, $4) ON CONFLICT (scoped_key) DO NOTHING RETURNING task_id",
        scoped(owner, key),
        request_hash,
        task_id,
        time.time(),
    )
    if inserted is not None:
        return None
    row = await tx.fetchrow(
        "SELECT task_id, request_hash FROM upload_keys WHERE scoped_key = $1", scoped(owner, key)
    )
    assert row is not None  # the conflicting row is committed
    if row[1] != request_hash:
        raise IdempotencyConflict()
    return str(row[0])
