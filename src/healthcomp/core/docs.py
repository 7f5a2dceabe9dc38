"""The interactive docs at `/docs`, served whole by the service: they work offline.

FastAPI's own page loads Swagger UI's script, stylesheet and favicon from a CDN, so it is
blank without internet. This one is the same page (FastAPI's `get_swagger_ui_html`, the
same Swagger UI 5) pointing at copies the service serves under `/docs/assets/`, taken
from the `fastapi-offline` package, which ships Swagger UI's dist files as package data
and follows its releases. Only the files the page uses are served, by name; the URLs
carry the package's version, so the answers can be cached for a year.

None of these routes is in the OpenAPI schema, and none asks for a token.
"""

from __future__ import annotations

from importlib.metadata import version
from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import FileResponse, HTMLResponse

from healthcomp.core.errors import NotFound

# The files the page references, by the name they are served under.
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon.png": "image/png",
}
_CACHE = {"Cache-Control": "public, max-age=31536000, immutable"}


def _asset_dir() -> Path:
    return Path(str(files("fastapi_offline").joinpath("static")))


def install_docs(app: FastAPI, url: str = "/docs") -> None:
    """`url`, `{url}/oauth2-redirect` and `{url}/assets/{name}`. The app is built with
    `docs_url=None`, so that FastAPI does not add its CDN page."""
    assert app.openapi_url is not None
    openapi_url = app.openapi_url
    redirect_url = f"{url}/oauth2-redirect"
    assets_url = f"{url}/assets"
    directory = _asset_dir()
    stamp = version("fastapi-offline")

    async def page(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")

        def asset(name: str) -> str:
            return f"{root}{assets_url}/{name}?v={stamp}"

        return get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=asset("swagger-ui-bundle.js"),
            swagger_css_url=asset("swagger-ui.css"),
            swagger_favicon_url=asset("favicon.png"),
            oauth2_redirect_url=root + redirect_url,
            init_oauth=app.swagger_ui_init_oauth,
            swagger_ui_parameters=app.swagger_ui_parameters,
        )

    async def oauth2_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    async def served(name: str) -> FileResponse:
        media_type = ASSETS.get(name)
        if media_type is None:
            raise NotFound("No such docs asset.")
        return FileResponse(directory / name, media_type=media_type, headers=_CACHE)

    app.add_api_route(url, page, methods=["GET"], include_in_schema=False)
    app.add_api_route(redirect_url, oauth2_redirect, methods=["GET"], include_in_schema=False)
    app.add_api_route(assets_url + "/{name}", served, methods=["GET"], include_in_schema=False)
