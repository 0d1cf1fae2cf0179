"""Browser sessions: an opaque id in the cookie, its row in the store, ended by sign-out;
and the tokens revoked before their expiry.

``POST /session`` trades a token for a session: a random id (256 bits) goes to
the browser in an HttpOnly cookie, and the store keeps the row under the id's
SHA-256, so a copy of the table holds no usable cookie. ``DELETE /session``
deletes the row: the cookie no longer works anywhere, and the streams it
opened end.

Looking a session up on every request would be a store read each time, so a
web process keeps the answers it read for ``SESSION_CACHE_S``. A sign-out
reaches the other web processes at once as a ``session.ended`` message on the
notifications fanout (``gateway.notifications``): each forgets the session and
ends the streams it opened there. While the broker is down that message is
lost: the other processes then refuse the cookie once their cached answer
expires, and their open streams end at the session's expiry or when the
client reconnects (a reconnect checks the session again).

A Bearer token is revoked by its own ``DELETE /session``: its ``jti`` goes to
``revoked_tokens`` until the token expires, and the same message ends its
streams everywhere. Checking a token costs one store read per token per
``SESSION_CACHE_S`` in each process.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Protocol

from infra.database import Database, Transaction

from .recent import Recent
from .tokens import Claims

logger = logging.getLogger(__name__)

MIGRATIONS = [
    "CREATE TABLE sessions (key TEXT PRIMARY KEY, user_id TEXT NOT NULL,"
    " admin BIGINT NOT NULL, expires_at DOUBLE PRECISION NOT NULL,"
    " created_at DOUBLE PRECISION NOT NULL);"
    "CREATE INDEX sessions_expires_at ON sessions (expires_at)",
    "CREATE TABLE revoked_tokens (token_id TEXT PRIMARY KEY,"
    " expires_at DOUBLE PRECISION NOT NULL);"
    "CREATE INDEX revoked_tokens_expires_at ON revoked_tokens (expires_at)",
]


class Endable(Protocol):
    """What a stream offers to be ended from outside (``gateway.sse.StreamEnd``)."""

    def end(self, reason: str) -> None: ...


def token_key(token_id: str) -> str:
    """The key a revoked token's streams and cached answer go by (beside session keys,
    which are hex digests)."""
    return f"token:{token_id}"


def session_key(session_id: str) -> str:
    """The key a session's row is stored under: the id's SHA-256 (the id is 256 random bits,
    so no salt or slow hash is needed)."""
    return hashlib.sha256(session_id.encode()).hexdigest()


class Sessions:
    """The sessions in the store, the answers this process read recently, and the open
    streams of each session in this process."""

    def __init__(
        self,
        database: Database,
        *,
        cache_s: float,
        announce: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self._database = database
        # Tells the other web processes of a sign-out here.
        self._announce = announce
        self._recent: Recent[str, tuple[Claims | None]] = Recent(ttl_s=cache_s)
        self._revoked: Recent[str, bool] = Recent(ttl_s=cache_s)
        # A stream's StreamEnd lives as long as the stream: weak references leave nothing
        # to clean up when it ends.
        self._streams: dict[str, weakref.WeakSet[Endable]] = {}
        self._prune_at = 1_000

    @classmethod
    async def open(
        cls,
        database: Database,
        *,
        cache_s: float,
        announce: Callable[[str], Awaitable[None]] | None = None,
    ) -> Sessions:
        await database.migrate("sessions", MIGRATIONS)
        return cls(database, cache_s=cache_s, announce=announce)

    async def create(self, claims: Claims) -> str:
        """A new session for ``claims`` until they expire; the id for the cookie."""
        session_id = secrets.token_urlsafe(32)
        key = session_key(session_id)
        now = time.time()

        async def write(tx: Transaction) -> None:
            # Ended-by-expiry sessions go as new ones come: the table stays the size of
            # the sessions alive.
            await tx.execute("DELETE FROM sessions WHERE expires_at <= $1", now)
            await tx.execute(
                "INSERT INTO sessions (key, user_id, admin, expires_at, created_at)"
                " VALUES ($1, $2, $3, $4, $5)",
                key,
                claims.user_id,
                int(claims.admin),
                claims.expires_at,
                now,
            )

        await self._database.write(write)
        return session_id

    async def lookup(self, session_id: str) -> Claims | None:
        """The session's claims, or None if it ended, expired or never was."""
        key = session_key(session_id)
        cached = self._recent.get(key)
        if cached is None:

            async def read(tx: Transaction) -> Claims | None:
                row = await tx.fetchrow(
                    "SELECT user_id, admin, expires_at FROM sessions WHERE key = $1", key
                )
                if row is None:
                    return None
                user_id, admin, expires_at = row
                return Claims(user_id, float(expires_at), admin=bool(admin), session=key)

            cached = (await self._database.read(read),)
            self._recent.put(key, cached)
        claims = cached[0]
        if claims is None or claims.expires_at <= time.time():
            return None
        return claims

    async def end(self, key: str) -> None:
        """Sign-out: delete the session, end its streams here and announce it to the others."""
        await self._database.write(
            lambda tx: tx.execute("DELETE FROM sessions WHERE key = $1", key)
        )
        await self._ended_everywhere(key)

    async def _ended_everywhere(self, key: str) -> None:
        self.ended(key)
        if self._announce is not None:
            try:
                await self._announce(key)
            except Exception as exc:  # the sign-out stands; the others learn of it later
                logger.warning("could not announce a sign-out to other web processes: %s", exc)

    async def revoke(self, token_id: str, expires_at: float) -> None:
        """Refuse the token ``token_id`` from now until it expires; end its streams."""
        now = time.time()

        async def write(tx: Transaction) -> None:
            await tx.execute("DELETE FROM revoked_tokens WHERE expires_at <= $1", now)
            await tx.execute(
                "INSERT INTO revoked_tokens (token_id, expires_at) VALUES ($1, $2)"
                " ON CONFLICT (token_id) DO NOTHING",
                token_id,
                expires_at,
            )

        await self._database.write(write)
        await self._ended_everywhere(token_key(token_id))

    async def is_revoked(self, token_id: str) -> bool:
        key = token_key(token_id)
        revoked = self._revoked.get(key)
        if revoked is None:

            async def read(tx: Transaction) -> bool:
                found = await tx.fetchval(
                    "SELECT 1 FROM revoked_tokens WHERE token_id = $1", token_id
                )
                return found is not None

            revoked = await self._database.read(read)
            self._revoked.put(key, revoked)
        return revoked

    def ended(self, key: str) -> None:
        """The session or token ``key`` ended (here or in another process): forget it, end
        its streams."""
        self._recent.forget(key)
        self._revoked.forget(key)
        streams = self._streams.pop(key, None)
        for stream in list(streams or ()):
            stream.end("signed out")

    def track(self, key: str, stream: Endable) -> None:
        """End ``stream`` when the session or token ``key`` ends."""
        self._streams.setdefault(key, weakref.WeakSet()).add(stream)
        if len(self._streams) > self._prune_at:
            # Sessions whose streams all ended without a sign-out.
            for gone in [k for k, streams in self._streams.items() if not streams]:
                del self._streams[gone]
            self._prune_at = max(1_000, 2 * len(self._streams))
