"""``GET /admin``: the operator dashboard page.

The HTML is static and holds no data: the page fetches everything from the admin API, which
checks the role on every request. Still, a signed-in user who is not an admin gets a bare 403
page rather than the dashboard's shell. Without credentials (or with ended ones) the page
itself asks the caller to sign in, as the main page does.
"""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import FileResponse

from ..auth import CREDENTIALS
from ..openapi import Media, documented
from ..pages import static_page
from ..tokens import Claims


@documented(
    "The operator dashboard (a bare 403 page for a signed-in non-admin)",
    responses={
        200: Media("text/html", "The dashboard (static HTML; it signs in like the page)"),
        403: Media("text/html", "Admins only"),
    },
    auth="public",
)
async def admin_page(request: Request) -> FileResponse:
    found = request.scope.get(CREDENTIALS)
    if isinstance(found, Claims) and found.expires_at > time.time() and not found.admin:
        return static_page("admins-only.html", status_code=403)
    return static_page("admin.html")
