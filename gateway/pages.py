"""The web pages: static HTML shipped in the package, served with a strict CSP."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse
from starlette.staticfiles import StaticFiles

from .openapi import Media, documented

STATIC_DIR = Path(__file__).resolve().parent / "static"

# The pages have no inline script or style and talk to their own origin only.
PAGE_CSP = (
    "default-src 'self'; img-src 'self'; connect-src 'self'; style-src 'self'; "
    "script-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def static_page(name: str, status_code: int = 200) -> FileResponse:
    """``gateway/static/<name>`` with the pages' CSP, never cached stale."""
    return FileResponse(
        STATIC_DIR / name,
        status_code=status_code,
        headers={"Cache-Control": "no-cache", "Content-Security-Policy": PAGE_CSP},
    )


def static_files() -> StaticFiles:
    """``/static/``: the pages' scripts, styles and images."""
    return STATIC_FILES(StaticFiles(directory=STATIC_DIR))


STATIC_FILES = documented(
    "A static file of the pages",
    responses={200: Media("*/*", "The file (JS, CSS, an image)")},
    errors=(404,),
    auth="public",
)


@documented(
    "The web page", responses={200: Media("text/html", "The page (static HTML)")}, auth="public"
)
async def page(request: Request) -> FileResponse:
    """The web page (plain HTML, CSS and JS shipped in the package)."""
    return static_page("index.html")
