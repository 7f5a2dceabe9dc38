"""`/docs` works offline: the page and everything it loads come from the service."""

from __future__ import annotations

from html.parser import HTMLParser
from urllib.parse import urlsplit

import httpx
from fastapi import FastAPI

from tests.conftest import assert_error

# What each kind of asset must be served as, and at least how big it must be.
KINDS = {
    ".js": ("text/javascript", 100_000),
    ".css": ("text/css", 10_000),
    ".png": ("image/png", 500),
}


class _Sources(HTMLParser):
    """Every `src` and `href` in a page."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href") and value is not None:
                self.found.append((tag, value))


def _sources(html: str) -> list[tuple[str, str]]:
    parser = _Sources()
    parser.feed(html)
    parser.close()
    return parser.found


async def test_the_page_loads_nothing_from_elsewhere(client: httpx.AsyncClient) -> None:
    resp = await client.get("/docs")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/html")
    sources = _sources(resp.text)
    tags = {tag for tag, _ in sources}
    assert {"script", "link"} <= tags, sources
    for _, url in sources:
        parts = urlsplit(url)
        assert not parts.scheme and not parts.netloc, f"{url} is not served by the service"
        assert parts.path.startswith("/docs/assets/"), url
    assert "http://" not in resp.text and "https://" not in resp.text
    assert "'/openapi.json'" in resp.text


async def test_every_asset_the_page_uses_is_served(client: httpx.AsyncClient) -> None:
    page = await client.get("/docs")
    urls = [url for _, url in _sources(page.text)]
    assert len(urls) == 3, urls  # the script, the stylesheet, the favicon
    for url in urls:
        resp = await client.get(url)
        assert resp.status_code == 200, url
        suffix = "." + urlsplit(url).path.rsplit(".", 1)[-1]
        content_type, least = KINDS[suffix]
        assert resp.headers["content-type"].startswith(content_type), url
        assert len(resp.content) >= least, url
        assert "max-age=31536000" in resp.headers["cache-control"], url
    script = next(url for url in urls if urlsplit(url).path.endswith(".js"))
    assert b"SwaggerUIBundle" in (await client.get(script)).content


async def test_the_oauth2_redirect_page_loads_nothing(client: httpx.AsyncClient) -> None:
    resp = await client.get("/docs/oauth2-redirect")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/html")
    assert _sources(resp.text) == []


async def test_an_unknown_asset_is_the_json_404(client: httpx.AsyncClient) -> None:
    for name in ("nope.js", "redoc.standalone.js", "swagger-ui.css.map", "..%2Fcore.py"):
        resp = await client.get(f"/docs/assets/{name}")
        assert_error(resp, 404, "not_found")
    assert_error(await client.get("/docs/assets/a/b.js"), 404, "not_found")


async def test_the_schema_lists_no_docs_route(app: FastAPI, client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    docs = [path for path in schema["paths"] if path.startswith("/docs")]
    assert docs == []
    assert app.openapi()["paths"].keys() == schema["paths"].keys()


async def test_redoc_stays_off(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/redoc"), 404, "not_found")
