"""Fixtures: a real Redis for every test, apps, clients, tokens and a movable clock.

`HC_TEST_BACKEND` picks the server:

* `embedded` (default): the embedded server class the product uses, in a temp dir;
* `external`: the server at `TEST_REDIS_URL` (default `redis://127.0.0.1:6379/15`);
* `cluster`: a Redis Cluster of three masters with a replica each (tests/cluster.py).

Each test gets its own key prefix and deletes its keys afterwards.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import pytest
from fastapi import FastAPI
from pydantic import AliasChoices, AliasPath

from healthcomp.app import create_app
from healthcomp.core.auth import SERVICE, USER, mint_token
from healthcomp.core.clock import FixedClock
from healthcomp.core.context import AppContext
from healthcomp.core.embedded import EmbeddedRedis
from healthcomp.core.redis import create_client
from healthcomp.core.settings import Settings

# Property tests: a quick run by default, many more examples in CI (env CI set), or any
# profile named by HYPOTHESIS_PROFILE. CI runs the most on the embedded backend; the
# scripts are the same on the others, which run fewer, to keep CI's time in bounds.
hypothesis.settings.register_profile("dev", max_examples=100)
hypothesis.settings.register_profile("ci", max_examples=1000)
hypothesis.settings.register_profile("ci-other-backends", max_examples=150)
_CI_PROFILE = (
    "ci" if os.environ.get("HC_TEST_BACKEND", "embedded") == "embedded" else "ci-other-backends"
)
hypothesis.settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE") or (_CI_PROFILE if os.environ.get("CI") else "dev")
)

TEST_SECRET = "test-secret-" + "x" * 40
BACKEND = os.environ.get("HC_TEST_BACKEND", "embedded")
# The clock the app sees in tests, unless a test moves it.
START = datetime(2026, 11, 10, 12, 0, tzinfo=UTC)


def pytest_report_header() -> str:
    return f"redis backend: {BACKEND}"


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if BACKEND == "external":
        yield os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    elif BACKEND == "cluster":
        from tests.cluster import ReplicatedCluster

        cluster = ReplicatedCluster(tmp_path_factory.mktemp("cluster")).start()
        try:
            yield cluster.url
        finally:
            cluster.stop()
    elif BACKEND == "embedded":
        # The suite's shared server skips the per-write fsync of the product's default
        # (`always`); durability is tested on servers started with the defaults
        # (tests/core/test_embedded.py, tests/faults).
        server = EmbeddedRedis(tmp_path_factory.mktemp("embedded"), fsync="everysec")
        url = server.start()
        try:
            yield url
        finally:
            server.stop()
    else:  # pragma: no cover
        raise RuntimeError(f"unknown HC_TEST_BACKEND {BACKEND!r}")


def settings_env_names() -> frozenset[str]:
    """Every environment variable `Settings` reads, upper-cased (it reads them in any case)."""
    config = Settings.model_config
    # With populate_by_name, pydantic-settings reads a field's own name too (`data_dir`,
    # `DATA_DIR`), not only its alias.
    by_name = bool(config.get("populate_by_name") or config.get("validate_by_name"))
    names: set[str] = set()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        choices = alias.choices if isinstance(alias, AliasChoices) else [alias or name]
        for choice in choices:
            # An AliasPath reads the variable named by its first step.
            names.add(str(choice.path[0]) if isinstance(choice, AliasPath) else choice)
        if by_name:
            names.add(name)
    prefix = config.get("env_prefix") or ""
    return frozenset(f"{prefix}{name}".upper() for name in names)


def clear_settings_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Removes every variable `Settings` would read, whatever its case, for this test."""
    wanted = settings_env_names()
    for name in list(os.environ):
        if name.upper() in wanted:
            monkeypatch.delenv(name)


def make_settings(tmp_path: Path, redis_url: str | None, **overrides: Any) -> Settings:
    """The declared defaults plus the test's values, never the environment or a `.env`.

    `model_construct` fills unset fields from the class's defaults and runs no settings
    source; it also skips validation, which lets a test shrink a bound (a 0.2 s JWKS TTL)
    that production must not go below.
    """
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "supabase_jwt_secret": TEST_SECRET,
        "supabase_url": None,
        "environment": "development",
        "data_dir": tmp_path / "data",
        "key_prefix": "t" + uuid.uuid4().hex[:12],
    }
    values.update(overrides)
    unknown = set(values) - set(Settings.model_fields)
    # model_construct drops a misspelt name without a word, leaving the default in place.
    assert not unknown, f"not Settings fields: {sorted(unknown)}"
    return Settings.model_construct(**values)


@pytest.fixture
def settings(tmp_path: Path, redis_url: str) -> Settings:
    return make_settings(tmp_path, redis_url)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short path, so that an embedded server's unix socket fits in sun_path
    (pytest's tmp_path may not)."""
    path = Path(tempfile.mkdtemp(prefix="hc-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(START)


@pytest.fixture
async def app(settings: Settings, clock: FixedClock) -> AsyncIterator[FastAPI]:
    application = create_app(settings, clock=clock)
    async with application.router.lifespan_context(application):
        yield application
        await _delete_prefix(application.state.ctx)


async def _delete_prefix(ctx: AppContext) -> None:
    # scan_iter on a cluster client walks every node.
    keys = [k async for k in ctx.r.scan_iter(match=f"{ctx.settings.key_prefix}:*", count=500)]
    for key in keys:
        await ctx.r.delete(key)


@pytest.fixture
def ctx(app: FastAPI) -> AppContext:
    context: AppContext = app.state.ctx
    return context


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


def token(user_id: str | None = "alice", role: str = USER, **kw: Any) -> str:
    return mint_token(TEST_SECRET, user_id=user_id, role=role, **kw)


def auth(user_id: str = "alice", **kw: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(user_id, **kw)}"}


SERVICE_AUTH = {"Authorization": f"Bearer {token(None, role=SERVICE)}"}

ApiCall = Callable[..., Awaitable[httpx.Response]]


def assert_error(resp: httpx.Response, status: int, error: str | None = None) -> dict[str, Any]:
    """The SPEC §4 envelope, with the status and (optionally) the stable code."""
    assert resp.status_code == status, resp.text
    body: dict[str, Any] = resp.json()
    assert body["success"] is False
    assert body["code"] == status
    assert isinstance(body["message"], str) and body["message"]
    if error is not None:
        assert body["error"] == error, body
    return body


@pytest.fixture
def raw_redis(redis_url: str, settings: Settings) -> Any:
    return create_client(redis_url, settings)
