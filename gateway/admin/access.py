"""Who may use the admin API: a signed-in admin; anyone else gets the usual JSON error."""

from __future__ import annotations

from starlette.requests import Request

from ..auth import authenticate
from ..errors import HttpError
from ..tokens import Claims


def require_admin(request: Request) -> Claims:
    """The caller's claims if an admin; 401 without credentials, 403 for anyone else."""
    user = authenticate(request)
    if not user.admin:
        raise HttpError(403, "forbidden", "admins only")
    return user
