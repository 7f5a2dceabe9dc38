"""The API guide names every route the app serves, as the OpenAPI schema spells it.

Reading `app.openapi()` builds the schema from the routes alone: no Redis is needed.
"""

from __future__ import annotations

from pathlib import Path

from healthcomp.app import create_app
from tests.conftest import make_settings

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "API.md"
METHODS = frozenset({"get", "put", "post", "delete", "patch", "options", "head", "trace"})


def _schema_routes(tmp_path: Path) -> list[str]:
    """`METHOD /path` for every operation in the app's OpenAPI schema."""
    app = create_app(make_settings(tmp_path, None))
    paths = app.openapi()["paths"]
    return [
        f"{method.upper()} {path}"
        for path, item in paths.items()
        for method in item
        if method in METHODS
    ]


def test_every_schema_route_is_in_the_guide(tmp_path: Path) -> None:
    routes = _schema_routes(tmp_path)
    assert routes, "the OpenAPI schema lists no operations"
    guide = GUIDE.read_text(encoding="utf-8")
    missing = [route for route in routes if route not in guide]
    assert not missing, f"docs/API.md does not mention: {missing}"
