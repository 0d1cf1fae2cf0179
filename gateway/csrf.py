"""Cross-site request forgery: a cookie-authenticated change must come from the page itself.

A browser attaches the session cookie to requests other sites make it send:
a form posting ``text/plain`` or ``multipart/form-data``, or a page on the
same site but another port (SameSite=Lax does not separate ports). So a
request that changes something and is authenticated by the cookie must

- carry an ``Origin`` that is the gateway's own (or one of ``CORS_ORIGINS``),
  or, without ``Origin``, ``Sec-Fetch-Site: same-origin``; browsers send one of
  them with every such request, and a page cannot forge either;
- with a body, declare it JSON or multipart: a type a cross-site form cannot
  send (JSON) or one whose handlers expect our own fields (multipart, and the
  origin check stands before it).

Bearer tokens are not sent by browsers on their own, so they need neither.
(OWASP CSRF Prevention Cheat Sheet: "Verifying Origin With Standard Headers",
"Fetch Metadata".)
"""

from __future__ import annotations

from collections.abc import Collection

from starlette.requests import Request

from .errors import HttpError

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
BODY_TYPES = frozenset({"application/json", "multipart/form-data"})
_DEFAULT_PORTS = {"http": "80", "https": "443"}


def check_same_origin(request: Request, allowed_origins: Collection[str]) -> None:
    """403 unless a state-changing request comes from the gateway's own origin (or an
    allowed one); 415 unless its body is JSON or multipart."""
    if request.method in SAFE_METHODS:
        return
    origin = request.headers.get("origin")
    if origin is not None:
        if origin != own_origin(request) and origin not in allowed_origins:
            raise HttpError(403, "cross_origin", f"a signed-in change from {origin!r} is refused")
    elif request.headers.get("sec-fetch-site") != "same-origin":
        raise HttpError(
            403,
            "cross_origin",
            "a change signed in by the session cookie needs Origin (or Sec-Fetch-Site: "
            "same-origin) from this gateway's own origin",
        )
    if request.method in BODY_METHODS:
        require_body_type(request, BODY_TYPES)


def require_body_type(request: Request, types: Collection[str]) -> None:
    """415 unless the request's Content-Type (without parameters) is one of ``types``."""
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type not in types:
        raise HttpError(
            415,
            "unsupported_media_type",
            f"send the body as {' or '.join(sorted(types))}, not {media_type or 'nothing'}",
        )


def own_origin(request: Request) -> str:
    """The origin the request was sent to (``scheme://host[:port]``, default port left out)."""
    scheme = request.url.scheme
    host = request.headers.get("host", "").lower()
    name, colon, port = host.rpartition(":")
    if colon and port == _DEFAULT_PORTS.get(scheme) and "]" not in port:
        host = name
    return f"{scheme}://{host}"
