"""SPEC §4: every error leaves in the JSON envelope, with a stable code."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

import tests.cluster
from healthcomp.core.embedded import redis_server_binary
from healthcomp.core.settings import Settings
from tests.conftest import assert_error, auth, make_settings
from tests.core.support import running_app

PROFILE = "/api/v1/users/me/profile"


async def test_unknown_route_is_404(client: httpx.AsyncClient) -> None:
    for path in ("/nope", "/api/v1/nope", "/api/v1/users/me/nope", "/api/v2/users/me"):
        body = assert_error(await client.get(path, headers=auth()), 404, "not_found")
        assert "details" not in body


async def test_wrong_method_is_405(client: httpx.AsyncClient) -> None:
    resp = await client.post("/health")
    assert_error(resp, 405, "method_not_allowed")
    assert resp.headers["allow"] == "GET"
    resp = await client.delete("/api/v1/users/me", headers=auth())
    assert_error(resp, 405, "method_not_allowed")
    resp = await client.post(PROFILE, headers=auth(), json={"display_name": "x"})
    assert_error(resp, 405, "method_not_allowed")
    assert resp.headers["allow"] == "PUT"


def _fields(body: dict[str, Any]) -> set[str]:
    return {d["field"] for d in body["details"]}


@pytest.mark.parametrize(
    ("payload", "field", "kind"),
    [
        ({"display_name": ""}, "display_name", "string_too_short"),
        ({"display_name": "   "}, "display_name", "value_error"),
        ({"display_name": "x" * 81}, "display_name", "string_too_long"),
        ({"display_name": "a\x00b"}, "display_name", "value_error"),
        ({"display_name": 42}, "display_name", "string_type"),
        ({"avatar_url": "ftp://x"}, "avatar_url", "string_pattern_mismatch"),
        ({"avatar_url": "javascript:alert(1)"}, "avatar_url", "string_pattern_mismatch"),
        ({"nickname": "x"}, "nickname", "extra_forbidden"),
    ],
)
async def test_invalid_profile_is_422_naming_the_field(
    client: httpx.AsyncClient, payload: dict[str, Any], field: str, kind: str
) -> None:
    resp = await client.put(PROFILE, headers=auth(), json=payload)
    body = assert_error(resp, 422, "validation_error")
    assert _fields(body) == {field}, body
    assert body["details"][0]["type"] == kind
    assert field in body["message"]
    # Nothing was written: the profile still has its default name.
    me = await client.get("/api/v1/users/me", headers=auth())
    assert me.json()["data"]["display_name"] == "alice"


async def test_unparseable_body_is_422(client: httpx.AsyncClient) -> None:
    headers = {**auth(), "content-type": "application/json"}
    for raw in (b'{"display_name": ', b"[1, 2]", b'"just a string"'):
        resp = await client.put(PROFILE, headers=headers, content=raw)
        body = assert_error(resp, 422, "validation_error")
        assert body["details"], body


@pytest.mark.parametrize(
    "content_type",
    [None, "application/x-www-form-urlencoded", "text/plain", "multipart/form-data; boundary=x"],
)
async def test_a_body_that_is_not_declared_json_is_415(
    client: httpx.AsyncClient, content_type: str | None
) -> None:
    """What `curl -d` sends without `-H 'Content-Type: application/json'` gets a sentence
    that says what to do, not a validation error quoting a Python bytes literal."""
    headers = auth() if content_type is None else {**auth(), "content-type": content_type}
    raw = b'{"display_name": "Maya"}'
    for method, path in (("PUT", PROFILE), ("POST", "/api/v1/fitness/sync")):
        resp = await client.request(method, path, headers=headers, content=raw)
        body = assert_error(resp, 415, "unsupported_media_type")
        assert "Content-Type: application/json" in body["message"], body
        assert "b'" not in resp.text
    me = await client.get("/api/v1/users/me", headers=auth())
    assert me.json()["data"]["display_name"] == "alice"


async def test_json_with_parameters_and_bodiless_posts_pass(client: httpx.AsyncClient) -> None:
    # The controls for the 415s: a charset or a +json type is JSON; no body, no check.
    for content_type in ("application/json; charset=utf-8", "application/merge-patch+json"):
        resp = await client.put(
            PROFILE,
            headers={**auth(), "content-type": content_type},
            content=b'{"display_name": "Maya"}',
        )
        assert resp.status_code == 200, resp.text
    resp = await client.post(
        "/api/v1/competitions/nope/join",
        headers={**auth(), "content-type": "application/x-www-form-urlencoded"},
    )
    assert_error(resp, 404, "competition_not_found")


async def test_valid_profile_update_is_accepted(client: httpx.AsyncClient) -> None:
    # The positive control for the 422 cases above.
    resp = await client.put(
        PROFILE,
        headers=auth(),
        json={"display_name": "  Alice   A ", "avatar_url": "https://x/a.png"},
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["data"]["display_name"] == "Alice A"
    assert resp.json()["data"]["avatar_url"] == "https://x/a.png"


# --- body size ----------------------------------------------------------------------------

LIMIT = 2048


@pytest.fixture
async def small_client(tmp_path: Path, redis_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(tmp_path, redis_url, max_body_bytes=LIMIT)
    async with running_app(settings) as (_, client):
        yield client


def _padded(size: int) -> bytes:
    """A valid profile update of exactly `size` bytes (JSON allows any whitespace)."""
    head, tail = b'{"display_name": "Padded"', b"}"
    return head + b" " * (size - len(head) - len(tail)) + tail


async def _chunks(data: bytes, size: int = 300) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        await asyncio.sleep(0)
        yield data[start : start + size]


async def test_body_at_the_limit_is_served(small_client: httpx.AsyncClient) -> None:
    headers = {**auth(), "content-type": "application/json"}
    resp = await small_client.put(PROFILE, headers=headers, content=_padded(LIMIT))
    assert resp.status_code == 200, resp.text
    resp = await small_client.put(PROFILE, headers=headers, content=_chunks(_padded(LIMIT)))
    assert resp.status_code == 200, resp.text
    assert resp.json()["data"]["display_name"] == "Padded"


async def test_body_over_the_limit_with_content_length_is_413(
    small_client: httpx.AsyncClient,
) -> None:
    headers = {**auth(), "content-type": "application/json"}
    resp = await small_client.put(PROFILE, headers=headers, content=_padded(LIMIT + 1))
    assert resp.request.headers["content-length"] == str(LIMIT + 1)
    assert_error(resp, 413, "payload_too_large")
    # Declared too large: refused before routing, whatever the route.
    resp = await small_client.post("/nope", content=b"x" * (LIMIT * 4))
    assert_error(resp, 413, "payload_too_large")


async def test_body_over_the_limit_streamed_is_413(small_client: httpx.AsyncClient) -> None:
    headers = {**auth(), "content-type": "application/json"}
    resp = await small_client.put(PROFILE, headers=headers, content=_chunks(_padded(LIMIT + 1)))
    assert "content-length" not in resp.request.headers
    assert resp.request.headers["transfer-encoding"] == "chunked"
    assert_error(resp, 413, "payload_too_large")
    me = await small_client.get("/api/v1/users/me", headers=auth())
    assert me.json()["data"]["display_name"] == "alice"


# --- 500 ----------------------------------------------------------------------------------


def _add_failing_routes(app: FastAPI) -> None:
    async def boom() -> None:
        raise RuntimeError("secret-internal-detail")

    async def key_error() -> None:
        raise KeyError("hc:{u:secret-key-name}:profile")

    app.add_api_route("/boom", boom)
    app.add_api_route("/boom/key", key_error)


async def test_500_does_not_leak(
    tmp_path: Path, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(tmp_path, redis_url)
    async with running_app(settings, setup=_add_failing_routes) as (_, client):
        for path, secret in (("/boom", "secret-internal-detail"), ("/boom/key", "secret-key")):
            resp = await client.get(path)
            body = assert_error(resp, 500, "internal_error")
            assert set(body) == {"success", "error", "message", "code"}
            assert secret not in resp.text
            assert "Traceback" not in resp.text and "Error" not in resp.text
            assert resp.headers["content-type"] == "application/json"
        # The service keeps serving after an unexpected error.
        assert (await client.get("/health")).status_code == 200
    # ... and the detail went to the log instead.
    assert "secret-internal-detail" in caplog.text


# --- Redis unreachable --------------------------------------------------------------------


# The start-up repair sweep in app.py catches RedisError only; an unreachable cluster
# raises RedisClusterException (not a RedisError), which then escapes the lifespan's exit.


@pytest.fixture(params=["standalone", "cluster"])
def kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest.fixture
def dead_port() -> int:
    # Below 55536, so a cluster node can also have its bus on port + 10000.
    return tests.cluster._cluster_port()


@pytest.fixture
def dead_settings(tmp_path: Path, dead_port: int, kind: str) -> Settings:
    scheme = "redis+cluster" if kind == "cluster" else "redis"
    return make_settings(tmp_path, f"{scheme}://127.0.0.1:{dead_port}", redis_timeout_seconds=0.5)


def _assert_503(resp: httpx.Response, error: str = "service_unavailable") -> None:
    assert_error(resp, 503, error)
    assert int(resp.headers["retry-after"]) > 0


def _assert_not_ready(resp: httpx.Response) -> None:
    # The probe's own answer: a refused connection fails fast, long before the deadline.
    assert_error(resp, 503, "not_ready")
    assert int(resp.headers["retry-after"]) > 0


async def test_redis_unreachable_is_503(dead_settings: Settings) -> None:
    # The app starts although nothing answers there yet.
    async with running_app(dead_settings) as (_, client):
        started = time.monotonic()
        assert (await client.get("/health")).status_code == 200
        _assert_not_ready(await client.get("/health/ready"))
        _assert_503(await client.get("/api/v1/users/me", headers=auth()))
        _assert_503(await client.put(PROFILE, headers=auth(), json={"display_name": "x"}))
        # Fails fast rather than hanging on the dead server.
        assert time.monotonic() - started < 5
        # Auth still comes first: no token is 401, not 503.
        assert_error(await client.get("/api/v1/users/me"), 401, "unauthorized")


@pytest.fixture
def redis_on_dead_port(
    tmp_path: Path, dead_port: int, kind: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    """Starts a throwaway server (or one-node cluster) on `dead_port` when called."""
    procs: list[subprocess.Popen[bytes]] = []
    monkeypatch.setattr(tests.cluster, "_cluster_port", lambda: dead_port)

    def start() -> subprocess.Popen[bytes]:
        directory = tmp_path / f"server-{len(procs)}"
        if kind == "cluster":
            proc, _ = tests.cluster.start_cluster(directory)
        else:
            directory.mkdir()
            args = ["--port", str(dead_port), "--bind", "127.0.0.1", "--dir", str(directory)]
            args += ["--save", "", "--appendonly", "no"]
            proc = subprocess.Popen(
                [str(redis_server_binary()), *args],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(10)


async def _until_ready(client: httpx.AsyncClient) -> int:
    deadline = time.monotonic() + 10
    status = 0
    while time.monotonic() < deadline:
        status = (await client.get("/health/ready")).status_code
        if status == 200:
            break
        await asyncio.sleep(0.05)
    return status


@pytest.mark.slow
async def test_recovers_when_redis_returns(
    dead_settings: Settings, redis_on_dead_port: Callable[[], subprocess.Popen[bytes]]
) -> None:
    async with running_app(dead_settings) as (_, client):
        _assert_503(await client.get("/api/v1/users/me", headers=auth()))
        _assert_not_ready(await client.get("/health/ready"))

        server = redis_on_dead_port()
        assert await _until_ready(client) == 200
        resp = await client.get("/api/v1/users/me", headers=auth())
        assert resp.status_code == 200, resp.text

        # Gone again after it was reached: 503 again, and back again by itself.
        server.kill()
        server.wait(10)
        _assert_503(await client.get("/api/v1/users/me", headers=auth()))
        _assert_not_ready(await client.get("/health/ready"))
        redis_on_dead_port()
        assert await _until_ready(client) == 200
        resp = await client.get("/api/v1/users/me", headers=auth())
        assert resp.status_code == 200, resp.text


async def test_hung_datastore_answers_503_within_the_deadline(tmp_path: Path) -> None:
    """A server that accepts connections and never answers (a frozen Redis): every
    request, concurrent ones included, gets 503 by the request deadline."""
    accepted: list[asyncio.StreamWriter] = []

    async def swallow(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # keep it open, say nothing

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    settings = make_settings(
        tmp_path,
        f"redis://127.0.0.1:{port}/0",
        redis_timeout_seconds=5.0,
        request_timeout_seconds=1.0,
    )
    try:
        async with running_app(settings, keep_keys=True) as (_, client):
            started = time.monotonic()
            sync = {"date": "2026-11-02", "steps": 5}
            responses = await asyncio.gather(
                *(client.get("/api/v1/users/me", headers=auth(f"u{i}")) for i in range(8)),
                client.get("/health/ready"),
                # The lean routes too (below the framework, inside the deadline).
                client.get("/api/v1/leaderboard/some-board", headers=auth("u9")),
                client.post("/api/v1/fitness/sync", json=sync, headers=auth("u10")),
            )
            elapsed = time.monotonic() - started
            # All of them, the readiness probe included, are cut by the deadline.
            for resp in responses:
                assert_error(resp, 503, "service_unavailable")
                assert resp.headers["retry-after"] == "2"
            # Bounded by the 1 s deadline, not by the 5 s socket timeout or retries.
            assert elapsed < 3, elapsed
            assert accepted, "the app never reached the hung server"
            assert (await client.get("/health")).status_code == 200
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_405_lists_every_method_of_the_path(client: httpx.AsyncClient) -> None:
    resp = await client.delete("/api/v1/competitions/some-id", headers=auth())
    assert_error(resp, 405, "method_not_allowed")
    assert resp.headers["allow"] == "GET, PATCH"


async def test_invalid_json_names_no_field(client: httpx.AsyncClient) -> None:
    headers = {**auth(), "content-type": "application/json"}
    resp = await client.put(PROFILE, headers=headers, content=b"{not json")
    body = assert_error(resp, 422, "validation_error")
    assert body["details"][0]["field"] is None
    assert "not valid JSON" in body["details"][0]["message"]


async def test_a_large_invalid_input_is_not_echoed(client: httpx.AsyncClient) -> None:
    records = [{"date": "2026-11-05", "steps": 1} for _ in range(401)]
    resp = await client.post("/api/v1/fitness/sync", headers=auth(), json={"records": records})
    body = assert_error(resp, 422, "validation_error")
    assert body["details"][0]["field"] == "records"
    assert "input" not in body["details"][0]
    assert len(resp.content) < 1000
