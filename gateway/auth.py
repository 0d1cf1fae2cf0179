"""Who is calling: a Bearer token (API clients) or the session cookie (browsers).

Credentials are resolved once per request, before routing (``Authenticating``),
because resolving them may wait: a session is read from the store, an
identity provider's key set fetched. Handlers then call ``authenticate``, a
plain function: 401 without valid credentials, and for a change authenticated
by the cookie the CSRF rules of ``gateway.csrf``.

``POST /session`` trades a token for a session (``gateway.sessions``): the
cookie holds an opaque id, never the token, and ``DELETE /session`` ends it,
with the streams it opened. ``DELETE /session`` with a Bearer token revokes
that token (by its ``jti``) until it expires.
"""

from __future__ import annotations

import asyncio
import functools
import time

import msgspec
from starlette.datastructures import Headers
from starlette.requests import Request, cookie_parser
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from infra.database import DatabaseError

from .bodies import decode_json, read_body
from .csrf import check_same_origin, own_origin, require_body_type
from .errors import HttpError, unavailable
from .fast_streams import StreamsFirst
from .jwks import ExternalTokens, ProviderUnavailable
from .openapi import documented
from .recent import Recent
from .sessions import Endable, Sessions, token_key
from .settings import GatewaySettings
from .tokens import ALGORITHM, Claims, InvalidToken, algorithm_of, verify

SESSION_COOKIE = "taskgate_session"
# The scope key of a request's resolved credentials: Claims, an HttpError, or None.
CREDENTIALS = "taskgate.credentials"


class SessionRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    token: str


_session_decoder = msgspec.json.Decoder(SessionRequest)


class SessionView(msgspec.Struct, frozen=True):
    """Who is signed in, and until when (Unix seconds)."""

    user_id: str
    admin: bool
    expires_at: float


def unauthorized(message: str) -> HttpError:
    return HttpError(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})


class Credentials:
    """Turns a request's Bearer token or session cookie into its caller's Claims."""

    def __init__(
        self, settings: GatewaySettings, sessions: Sessions, external: ExternalTokens | None
    ) -> None:
        self._secret = settings.secret_key
        self._sessions = sessions
        self._external = external
        # Identity-provider tokens verified lately, no longer than the key set is kept.
        self._verified: Recent[str, Claims] = Recent(ttl_s=settings.jwks_cache_s)

    @classmethod
    def from_settings(cls, settings: GatewaySettings, sessions: Sessions) -> Credentials:
        external = None
        if settings.jwks_url:
            external = ExternalTokens(
                settings.jwks_url,
                issuer=settings.jwt_issuer,
                audience=settings.jwt_audience,
                roles_claim=settings.jwt_roles_claim,
                admin_role=settings.jwt_admin_role,
                cache_s=settings.jwks_cache_s,
                refetch_cooldown_s=settings.jwks_refetch_cooldown_s,
                timeout_s=settings.jwks_timeout_s,
            )
        return cls(settings, sessions, external)

    async def resolve(self, scope: Scope) -> Claims | HttpError | None:
        """The request's caller, why its credentials fail, or None when it sent none."""
        headers = Headers(scope=scope)
        header = headers.get("authorization")
        if header is not None:
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                return unauthorized("use Authorization: Bearer <token>")
            try:
                return await self.verify_token(token.strip())
            except HttpError as exc:
                return exc
        cookies = headers.get("cookie")
        session_id = cookie_parser(cookies).get(SESSION_COOKIE) if cookies else None
        if not session_id:
            return None
        try:
            claims = await self._sessions.lookup(session_id)
        except DatabaseError as exc:
            return unavailable(f"cannot read the session now: {exc}")
        if claims is None:
            return unauthorized("the session has ended: sign in again")
        return claims

    async def verify_token(self, token: str) -> Claims:
        """The token's claims; 401 if it is not valid or was revoked, 503 if its provider
        or the store cannot answer now."""
        try:
            claims = await self._verify(token)
            if claims.token_id is not None and await self._sessions.is_revoked(claims.token_id):
                raise InvalidToken("the token was revoked")
            return claims
        except InvalidToken as exc:
            raise unauthorized(str(exc)) from None
        except ProviderUnavailable as exc:
            raise unavailable(str(exc)) from None
        except DatabaseError as exc:
            raise unavailable(f"cannot check the token now: {exc}") from None

    async def _verify(self, token: str) -> Claims:
        if self._external is None or _algorithm_once(token) == ALGORITHM:
            return _verify_cached(self._secret, token)
        claims = self._verified.get(token)
        if claims is None:
            # PyJWKClient fetches with urllib, which blocks.
            claims = await asyncio.to_thread(self._external.verify, token)
            self._verified.put(token, claims)
        if claims.expires_at <= time.time():
            raise InvalidToken("the token has expired")
        return claims


class Authenticating(StreamsFirst):
    """The app: it resolves each request's credentials (``Credentials``, from
    ``app.state.credentials``) before the streams, the middleware and the routes.

    A stream keeps this frame for its life: 0.4 KB (bench/sse.py --hold-only
    --streams 3000: 18.5 KB per idle stream before, 18.9 KB after).
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            credentials: Credentials | None = getattr(self.state, "credentials", None)
            if credentials is not None:
                scope[CREDENTIALS] = await credentials.resolve(scope)
        await super().__call__(scope, receive, send)


def authenticate(request: Request) -> Claims:
    """The caller's claims; 401 without valid credentials, 403/415 for a cookie-authenticated
    change that may be forged (``gateway.csrf``)."""
    found = request.scope.get(CREDENTIALS)
    if isinstance(found, HttpError):
        raise found
    if found is None:
        raise unauthorized("sign in: send a Bearer token or open a session")
    if found.expires_at <= time.time():
        raise unauthorized("the token has expired")
    if found.session is not None:
        settings: GatewaySettings = request.app.state.settings
        check_same_origin(request, settings.cors_origins)
    return found


def end_with_session(request: Request, stream: Endable) -> None:
    """End ``stream`` when the session (or the revocable token) the request came with ends."""
    found = request.scope.get(CREDENTIALS)
    if not isinstance(found, Claims):
        return
    sessions: Sessions = request.app.state.sessions
    if found.session is not None:
        sessions.track(found.session, stream)
    elif found.token_id is not None:
        sessions.track(token_key(found.token_id), stream)


@functools.lru_cache(maxsize=4096)
def _algorithm_once(token: str) -> str:
    return algorithm_of(token)


@functools.lru_cache(maxsize=4096)
def _verify_once(secret: str, token: str) -> Claims:
    return verify(secret, token)


def _verify_cached(secret: str, token: str) -> Claims:
    """``verify``, remembered per token: a client sends the same one on every request, and
    checking its signature again costs more than the rest of a small request."""
    claims = _verify_once(secret, token)
    if claims.expires_at <= time.time():
        raise InvalidToken("the token has expired")
    return claims


@documented(
    "Sign in: a session cookie for a token (in the body or a Bearer header)",
    responses={200: SessionView},
    body=SessionRequest,
    errors=(401, 403, 415, 503),
    auth="public",
)
async def open_session(request: Request) -> Response:
    """``POST /session`` with ``{"token": ...}`` as JSON (or a Bearer header): a new session
    in the cookie. JSON only: a cross-site form cannot send it, so it cannot sign a victim
    in as its author."""
    settings: GatewaySettings = request.app.state.settings
    sessions: Sessions = request.app.state.sessions
    origin = request.headers.get("origin")
    if origin is not None and origin != own_origin(request) and origin not in settings.cors_origins:
        raise HttpError(403, "cross_origin", f"signing in from {origin!r} is refused")
    previous = request.scope.get(CREDENTIALS)
    if request.headers.get("authorization"):
        claims = authenticate(request)
    else:
        require_body_type(request, {"application/json"})
        token = _token_from_body(await read_body(request))
        credentials: Credentials = request.app.state.credentials
        claims = await credentials.verify_token(token)
    try:
        if isinstance(previous, Claims) and previous.session is not None:
            await sessions.end(previous.session)
        session_id = await sessions.create(claims)
    except DatabaseError as exc:
        raise unavailable(f"cannot store the session now: {exc}") from None
    response = _session_view(claims)
    response.set_cookie(
        SESSION_COOKIE,
        session_id,
        max_age=max(0, int(claims.expires_at - time.time())),
        httponly=True,
        samesite="lax",
        secure=settings.cookie_secure,
        path="/",
    )
    return response


@documented("Who is signed in", responses={200: SessionView})
async def get_session(request: Request) -> Response:
    return _session_view(authenticate(request))


@documented(
    "Sign out: end the cookie's session, or revoke the Bearer token",
    responses={204: None},
    errors=(400, 403, 503),
    auth="public",
)
async def close_session(request: Request) -> Response:
    """``DELETE /session``: end the cookie's session, or revoke the Bearer token sent with
    it; either stops working everywhere and its streams end. 204 also without credentials
    (the cookie is cleared)."""
    found = request.scope.get(CREDENTIALS)
    sessions: Sessions = request.app.state.sessions
    try:
        if isinstance(found, Claims) and found.session is not None:
            settings: GatewaySettings = request.app.state.settings
            check_same_origin(request, settings.cors_origins)
            await sessions.end(found.session)
        elif isinstance(found, Claims):
            if found.token_id is None:
                raise HttpError(400, "not_revocable", "this token has no jti: it cannot be revoked")
            await sessions.revoke(found.token_id, found.expires_at)
    except DatabaseError as exc:
        raise unavailable(f"cannot sign out now: {exc}") from None
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax")
    return response


def _token_from_body(body: bytes) -> str:
    return decode_json(body, _session_decoder).token.strip()


def _session_view(claims: Claims) -> JSONResponse:
    view = SessionView(user_id=claims.user_id, admin=claims.admin, expires_at=claims.expires_at)
    return JSONResponse(msgspec.to_builtins(view))
