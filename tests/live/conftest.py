"""The live suites' fixtures: two `healthcomp serve` processes on the run's Redis
(settings from the test module's `ENV`), a client of the first, and the keys dropped
afterwards."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from healthcomp.core.redis import create_client
from tests.conftest import make_settings
from tests.live.support import Service, services


@pytest.fixture(scope="module")
def prefix() -> str:
    return "w" + uuid.uuid4().hex[:10]


@pytest.fixture(scope="module")
async def _drop_keys(
    redis_url: str, prefix: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[None]:
    yield
    client = create_client(redis_url, make_settings(tmp_path_factory.mktemp("x"), redis_url))
    async for key in client.scan_iter(match=f"{prefix}:*", count=500):
        await client.delete(key)
    await client.aclose()


@pytest.fixture(scope="module")
def pair(
    request: pytest.FixtureRequest,
    redis_url: str,
    prefix: str,
    tmp_path_factory: pytest.TempPathFactory,
    _drop_keys: None,
) -> Iterator[list[Service]]:
    env: dict[str, str] = getattr(request.module, "ENV", {})
    with services(redis_url, prefix, tmp_path_factory.mktemp("live"), 2, **env) as started:
        yield started


@pytest.fixture
async def http(pair: list[Service]) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=pair[0].base, timeout=10) as client:
        yield client
