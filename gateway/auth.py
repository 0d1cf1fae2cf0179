"""Who is calling: a Bearer token (API clients) or the session cookie (browsers).

Both carry the same signed token (``gateway.tokens``). ``POST /session``
turns a token into an HttpOnly, SameSite=Lax cookie, so a page's EventSource
(which cannot send headers) is authenticated without a token in its URL;
SameSite=Lax keeps the cookie off cross-site POSTs, the CSRF vector.
"""

from __future__ import annotations

import functools
import time

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .bodies import decode_json, read_body
from .errors import HttpError
from .settings import GatewaySettings
from .tokens import Claims, InvalidToken, verify

SESSION_COOKIE = "taskgate_session"


class SessionRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    token: str


_session_decoder = msgspec.json.Decoder(SessionRequest)


def unauthorized(message: str) -> HttpError:
    return HttpError(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})


def authenticate(request: Request) -> Claims:
    """The caller's claims; 401 without valid credentials."""
    settings: GatewaySettings = request.app.state.settings
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise unauthorized("use Authorization: Bearer <token>")
    else:
        token = request.cookies.get(SESSION_COOKIE, "")
        if not token:
            raise unauthorized("sign in: send a Bearer token or open a session")
    try:
        return _verify_cached(settings.secret_key, token.strip())
    except InvalidToken as exc:
        raise unauthorized(str(exc)) from None


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


async def open_session(request: Request) -> Response:
    """``POST /session`` with ``{"token": ...}`` (or a Bearer header): set the session cookie."""
    settings: GatewaySettings = request.app.state.settings
    if request.headers.get("authorization"):
        claims = authenticate(request)
        token = request.headers["authorization"].partition(" ")[2].strip()
    else:
        token = _token_from_body(await read_body(request))
        try:
            claims = verify(settings.secret_key, token)
        except InvalidToken as exc:
            raise unauthorized(str(exc)) from None
    response = _session_view(claims)
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=max(0, int(claims.expires_at - time.time())),
        httponly=True,
        samesite="lax",
        secure=settings.cookie_secure,
        path="/",
    )
    return response


async def get_session(request: Request) -> Response:
    return _session_view(authenticate(request))


async def close_session(request: Request) -> Response:
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax")
    return response


def _token_from_body(body: bytes) -> str:
    return decode_json(body, _session_decoder).token.strip()


def _session_view(claims: Claims) -> JSONResponse:
    return JSONResponse({"user_id": claims.user_id, "expires_at": claims.expires_at})
