"""`/console` and its files, served from the package: no build step, nothing from a CDN.

The page is the same for everyone and carries no data: it signs in with the token the
user pastes (or `#token=…` in its URL) and calls the public API with it, so none of
these routes asks for a token, and none is in the OpenAPI schema.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, Response

from healthcomp.core.errors import NotFound

router = APIRouter(include_in_schema=False)

# The files the page uses, by the name they are served under.
ASSETS = {
    "console.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
# The page refers to each asset as `console/assets/<name>?v=dev`; it is served with the
# assets' content hash in place of `dev`, so an asset cached for a day is never stale.
_PLACEHOLDER = "?v=dev"
_PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    # Only this service: the page, its assets, the API and the WebSocket.
    "Content-Security-Policy": (
        "default-src 'self'; connect-src 'self'; img-src 'self' data:; "
        "style-src 'self'; script-src 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
_ASSET_HEADERS = {"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"}


def _static() -> Path:
    return Path(str(files("healthcomp.console").joinpath("static")))


@lru_cache(maxsize=4)
def _render(static: Path, stamps: tuple[int, ...]) -> str:
    """The page with the assets' version; `stamps` (the files' mtimes) key the cache, so
    an edited file (`healthcomp serve --reload`, a new release) is served at once."""
    digest = hashlib.sha256()
    for name in sorted(ASSETS):
        digest.update((static / name).read_bytes())
    html = (static / "index.html").read_text(encoding="utf-8")
    return html.replace(_PLACEHOLDER, f"?v={digest.hexdigest()[:12]}")


@router.get("/console")
async def page() -> Response:
    static = _static()
    stamps = tuple((static / name).stat().st_mtime_ns for name in ["index.html", *sorted(ASSETS)])
    html = _render(static, stamps)
    return Response(html, media_type="text/html; charset=utf-8", headers=_PAGE_HEADERS)


@router.get("/console/assets/{name}")
async def asset(name: str) -> FileResponse:
    media_type = ASSETS.get(name)
    if media_type is None:
        raise NotFound("No such console asset.")
    return FileResponse(_static() / name, media_type=media_type, headers=_ASSET_HEADERS)
