"""SPEC §3: every operation refuses a caller without a usable token, the public ones aside.

The operations come from the app's own OpenAPI schema at collection time, so a route added
later is in the matrix without anyone remembering to add it here.
"""

from __future__ import annotations

import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from healthcomp.app import create_app
from healthcomp.core.auth import ANON, SERVICE, mint_token
from tests.conftest import TEST_SECRET, assert_error, make_settings

# Everything a caller may reach without a token, by (method, path template). Routes that are
# not in the schema (the docs themselves) are listed too, and probed below, so a stale entry
# here fails rather than quietly widening what is public.
PUBLIC = frozenset(
    {
        ("GET", "/health"),
        ("GET", "/health/ready"),
        ("GET", "/openapi.json"),
        ("GET", "/metrics"),  # public in development (tests/core/test_metrics.py: protected)
        ("GET", "/docs"),
        ("GET", "/docs/oauth2-redirect"),
    }
)

# Path values that fit `^[A-Za-z0-9_-]{1,64}$` (ids) or `^[0-9]{1,18}$` (flag ids), so a
# refusal is about the token, not the id: each parameter takes the first that fits.
PATH_VALUE = "x1"
PATH_VALUES = (PATH_VALUE, "1")


def _path_value(pattern: str | None) -> str:
    fits = [v for v in PATH_VALUES if pattern is None or re.search(pattern, v)]
    return fits[0] if fits else PATH_VALUE


OTHER_SECRET = "another-secret-" + "y" * 40
_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


@dataclass(frozen=True)
class Operation:
    method: str
    template: str
    url: str
    has_body: bool
    patterns: tuple[tuple[str, str], ...]  # (path parameter, its schema pattern)

    @property
    def public(self) -> bool:
        return (self.method, self.template) in PUBLIC

    @property
    def id(self) -> str:
        return f"{self.method} {self.template}"


def _operations() -> list[Operation]:
    # create_app only builds routes; Redis and the data dir are first touched by the
    # lifespan, which never runs for this app, so nothing is written under `unused`.
    unused = Path(tempfile.gettempdir()) / "hc-auth-matrix-unused"
    schema: dict[str, Any] = create_app(make_settings(unused, None)).openapi()
    found: list[Operation] = []
    for template, item in schema["paths"].items():
        shared = item.get("parameters", [])
        for method, operation in item.items():
            if method not in _METHODS:
                continue
            params = [*shared, *operation.get("parameters", [])]
            in_path = [p for p in params if p.get("in") == "path"]
            url = template
            patterns: list[tuple[str, str]] = []
            for param in in_path:
                pattern = param.get("schema", {}).get("pattern")
                url = url.replace("{" + param["name"] + "}", _path_value(pattern))
                if pattern is not None:
                    patterns.append((param["name"], pattern))
            found.append(
                Operation(
                    method=method.upper(),
                    template=template,
                    url=url,
                    has_body="requestBody" in operation,
                    patterns=tuple(patterns),
                )
            )
    return found


OPERATIONS = _operations()
PROTECTED = [op for op in OPERATIONS if not op.public]
PUBLIC_IN_SCHEMA = [op for op in OPERATIONS if op.public]
PUBLIC_OUTSIDE_SCHEMA = sorted(PUBLIC - {(op.method, op.template) for op in OPERATIONS})


def _now() -> int:
    return int(time.time())


def _anon_key() -> str:
    # What a Supabase project hands out as its anon key: no sub, no aud.
    now = _now()
    claims = {"iss": "supabase", "ref": "hcproject", "role": ANON, "iat": now, "exp": now + 3600}
    return jwt.encode(claims, TEST_SECRET, algorithm="HS256")


def _service_key(secret: str, ttl: int) -> str:
    now = _now()
    claims = {"iss": "supabase", "ref": "hcproject", "role": SERVICE, "iat": now, "exp": now + ttl}
    return jwt.encode(claims, secret, algorithm="HS256")


def _bearer(make: Callable[[], str]) -> Callable[[], dict[str, str]]:
    return lambda: {"Authorization": f"Bearer {make()}"}


# Each refused everywhere but PUBLIC. Expired means past the 30 s leeway.
REFUSED: dict[str, Callable[[], dict[str, str]]] = {
    "no token": dict,
    "anon key": _bearer(_anon_key),
    "expired user": _bearer(lambda: mint_token(TEST_SECRET, user_id=PATH_VALUE, ttl_seconds=-600)),
    "user, other secret": _bearer(lambda: mint_token(OTHER_SECRET, user_id=PATH_VALUE)),
    "expired service": _bearer(lambda: _service_key(TEST_SECRET, -600)),
    "service, other secret": _bearer(lambda: _service_key(OTHER_SECRET, 3600)),
}


async def _call(
    client: httpx.AsyncClient, op: Operation, headers: dict[str, str]
) -> httpx.Response:
    # A syntactically fine body that no route accepts: the refusal must come before
    # validation, so an anonymous caller learns nothing about the input.
    body: dict[str, Any] | None = {} if op.has_body else None
    return await client.request(op.method, op.url, headers=headers, json=body)


def test_the_schema_was_walked() -> None:
    # Guards against an empty parametrisation passing vacuously.
    assert any(op.template == "/api/v1/users/me" for op in PROTECTED)
    assert any(op.has_body for op in PROTECTED)
    assert any(op.patterns for op in PROTECTED)


@pytest.mark.parametrize("op", PROTECTED, ids=[op.id for op in PROTECTED])
def test_path_values_fit_the_schema(op: Operation) -> None:
    for name, pattern in op.patterns:
        assert re.search(pattern, _path_value(pattern)), (
            f"{op.id}: {name!r} wants {pattern}; extend PATH_VALUES"
        )


@pytest.mark.parametrize("credential", list(REFUSED), ids=list(REFUSED))
@pytest.mark.parametrize("op", PROTECTED, ids=[op.id for op in PROTECTED])
async def test_protected_operation_refuses(
    client: httpx.AsyncClient, op: Operation, credential: str
) -> None:
    resp = await _call(client, op, REFUSED[credential]())
    body = assert_error(resp, 401, "unauthorized")
    assert set(body) <= {"success", "error", "message", "code", "details"}, body
    assert resp.headers.get("www-authenticate") == "Bearer", resp.headers


@pytest.mark.parametrize("op", PROTECTED, ids=[op.id for op in PROTECTED])
async def test_protected_operation_lets_a_valid_token_through(
    client: httpx.AsyncClient, op: Operation
) -> None:
    # The control for the refusals above: the same call with a good token gets past
    # authentication (to whatever the route then says about an unknown id or an empty body).
    headers = {"Authorization": f"Bearer {mint_token(TEST_SECRET, user_id=PATH_VALUE)}"}
    resp = await _call(client, op, headers)
    assert resp.status_code != 401, resp.text
    assert resp.status_code < 500, resp.text


@pytest.mark.parametrize("credential", list(REFUSED), ids=list(REFUSED))
@pytest.mark.parametrize("op", PUBLIC_IN_SCHEMA, ids=[op.id for op in PUBLIC_IN_SCHEMA])
async def test_public_operation_answers_anyone(
    client: httpx.AsyncClient, op: Operation, credential: str
) -> None:
    resp = await _call(client, op, REFUSED[credential]())
    assert resp.status_code == 200, resp.text


@pytest.mark.parametrize("credential", list(REFUSED), ids=list(REFUSED))
@pytest.mark.parametrize(
    ("method", "path"), PUBLIC_OUTSIDE_SCHEMA, ids=[f"{m} {p}" for m, p in PUBLIC_OUTSIDE_SCHEMA]
)
async def test_public_route_outside_the_schema_answers_anyone(
    client: httpx.AsyncClient, method: str, path: str, credential: str
) -> None:
    resp = await client.request(method, path, headers=REFUSED[credential]())
    assert resp.status_code == 200, resp.text
