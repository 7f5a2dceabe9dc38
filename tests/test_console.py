"""`/console` as served: the page, its files and the rules its code keeps (no inline code,
no markup built from data, nothing from elsewhere). The page itself runs in a real
browser in tests/live/test_console.py."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from healthcomp.console.routes import ASSETS
from tests.conftest import assert_error

STATIC = Path(__file__).resolve().parents[1] / "src" / "healthcomp" / "console" / "static"


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.script_text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        if self.tags and self.tags[-1][0] == "script":
            self.script_text += data.strip()


def _tags(html: str) -> _Tags:
    parser = _Tags()
    parser.feed(html)
    parser.close()
    return parser


async def test_the_page_and_its_files_come_from_the_service(client: httpx.AsyncClient) -> None:
    resp = await client.get("/console")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/html")
    csp = resp.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "style-src 'self'" in csp
    assert resp.headers["cache-control"] == "no-cache"
    urls = [
        attrs[name]
        for _, attrs in _tags(resp.text).tags
        for name in ("src", "href")
        if attrs.get(name)
    ]
    assert len(urls) == 3, urls  # the script, the stylesheet, the icon
    versions = set()
    for url in urls:
        assert url is not None
        parts = urlsplit(url)
        assert not parts.scheme and not parts.netloc and not url.startswith("/"), url
        name = parts.path.removeprefix("console/assets/")
        assert name in ASSETS, url
        # The files' content hash: a changed file is a new URL, never a stale cache.
        assert re.fullmatch(r"v=[0-9a-f]{12}", parts.query), url
        versions.add(parts.query)
        asset = await client.get(f"/{parts.path}?{parts.query}")
        assert asset.status_code == 200, url
        assert asset.headers["content-type"].startswith(ASSETS[name].split(";")[0])
        assert asset.content == (STATIC / name).read_bytes()
    assert len(versions) == 1


async def test_only_the_listed_files_are_served(client: httpx.AsyncClient) -> None:
    for name in ("index.html", "nope.js", "..%2Froutes.py"):
        assert_error(await client.get(f"/console/assets/{name}"), 404)
    schema = (await client.get("/openapi.json")).json()
    assert not [path for path in schema["paths"] if path.startswith("/console")]


def test_no_inline_code_and_no_markup_from_data() -> None:
    # The page's CSP allows neither inline scripts nor inline styles: none may be needed.
    tags = _tags((STATIC / "index.html").read_text(encoding="utf-8"))
    assert tags.script_text == ""
    for tag, attrs in tags.tags:
        assert tag != "style"
        assert "style" not in attrs, tag
        assert not [a for a in attrs if a.startswith("on")], (tag, attrs)
        if tag == "script":
            assert attrs.get("src"), "a script without src"
    script = (STATIC / "console.js").read_text(encoding="utf-8")
    # Names and reasons are user input: text nodes only. The token: this tab only.
    for banned in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                   "new Function", "localStorage", 'setAttribute("style"'):  # fmt: skip
        assert banned not in script, banned
    for name in ("index.html", "console.js", "console.css"):
        text = (STATIC / name).read_text(encoding="utf-8")
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text), name
