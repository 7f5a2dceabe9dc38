"""The client's address behind trusted proxies (core.proxies), and CORS: off by default,
on for the configured origins only (core.middleware.Cors)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from healthcomp.core.proxies import ClientAddress
from healthcomp.core.settings import Settings
from tests.conftest import assert_error, auth, clear_settings_env, make_settings
from tests.core.support import running_app


def scope(peer: str | None, *forwarded: str) -> dict[str, Any]:
    headers = [(b"x-forwarded-for", value.encode()) for value in forwarded]
    return {"client": (peer, 5000) if peer else None, "headers": headers}


@pytest.mark.parametrize(
    ("trusted", "peer", "forwarded", "client"),
    [
        # Nobody trusted (the default): the header is ignored, loopback included.
        ([], "127.0.0.1", ["203.0.113.9"], "127.0.0.1"),
        # An untrusted peer's header is ignored.
        (["10.0.0.0/8"], "192.0.2.1", ["203.0.113.9"], "192.0.2.1"),
        # A trusted proxy names the client.
        (["10.0.0.0/8"], "10.1.2.3", ["203.0.113.9"], "203.0.113.9"),
        # What the client wrote to the left of its proxy's entry is not believed.
        (["10.0.0.0/8"], "10.1.2.3", ["1.1.1.1, 203.0.113.9"], "203.0.113.9"),
        # Through two proxies, both trusted: the first untrusted from the right.
        (["10.0.0.0/8"], "10.1.2.3", ["1.1.1.1, 203.0.113.9, 10.0.0.5"], "203.0.113.9"),
        # Several header lines are one list, in order.
        (["10.0.0.0/8"], "10.1.2.3", ["1.1.1.1", "203.0.113.9"], "203.0.113.9"),
        # Every hop trusted: the leftmost proxy.
        (["10.0.0.0/8"], "10.1.2.3", ["10.0.0.7, 10.0.0.5"], "10.0.0.7"),
        # Garbage where an address belongs: counted against the last trusted hop.
        (["10.0.0.0/8"], "10.1.2.3", ["203.0.113.9, not-an-ip"], "10.1.2.3"),
        # No header from a trusted proxy: the proxy itself.
        (["10.0.0.0/8"], "10.1.2.3", [], "10.1.2.3"),
        # Ports and IPv6, and an IPv4-mapped IPv6 peer matching an IPv4 network.
        (["10.0.0.0/8"], "10.1.2.3", ["203.0.113.9:4711"], "203.0.113.9"),
        (["2001:db8::/32"], "2001:db8::1", ["[2001:db8:ffff::2]:443, 2001:db9::7"], "2001:db9::7"),
        (["10.0.0.0/8"], "::ffff:10.1.2.3", ["203.0.113.9"], "203.0.113.9"),
        # No peer known (a unix socket): "unknown", as before.
        (["10.0.0.0/8"], None, ["203.0.113.9"], "unknown"),
    ],
)
def test_the_client_address(
    trusted: list[str], peer: str | None, forwarded: list[str], client: str
) -> None:
    assert ClientAddress(trusted).of(scope(peer, *forwarded)) == client


def test_settings_read_lists_and_refuse_what_is_not_a_network_or_an_origin(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clear_settings_env(monkeypatch)
    monkeypatch.setenv("HC_TRUSTED_PROXIES", "10.0.0.0/8, 127.0.0.1")
    monkeypatch.setenv("HC_CORS_ORIGINS", "https://app.example.com,http://localhost:3000")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.trusted_proxies == ["10.0.0.0/8", "127.0.0.1"]
    assert settings.cors_origins == ["https://app.example.com", "http://localhost:3000"]
    for name, value in [
        ("HC_TRUSTED_PROXIES", "10.0.0.0/33"),
        ("HC_TRUSTED_PROXIES", "proxy.internal"),
        ("HC_CORS_ORIGINS", "https://app.example.com/"),
        ("HC_CORS_ORIGINS", "app.example.com"),
    ]:
        monkeypatch.setenv(name, value)
        with pytest.raises(ValidationError, match=name):
            Settings(_env_file=None)  # type: ignore[call-arg]
        monkeypatch.delenv(name)


APP = "https://app.example.com"
PREFLIGHT = {"Origin": APP, "Access-Control-Request-Method": "POST"}


async def test_cors_is_off_by_default(tmp_path: Path, redis_url: str) -> None:
    async with running_app(make_settings(tmp_path, redis_url)) as (_, client):
        resp = await client.get("/api/v1/users/me", headers={**auth("ann"), "Origin": APP})
        assert resp.status_code == 200
        assert not any(name.startswith("access-control-") for name in resp.headers)
        resp = await client.options("/api/v1/fitness/sync", headers=PREFLIGHT)
        assert_error(resp, 405)
        assert "access-control-allow-origin" not in resp.headers


@pytest.mark.parametrize("origins", [[APP], ["*"]])
async def test_cors_for_configured_origins(
    tmp_path: Path, redis_url: str, origins: list[str]
) -> None:
    settings = make_settings(tmp_path, redis_url, cors_origins=origins)
    granted = "*" if origins == ["*"] else APP
    async with running_app(settings) as (_, client):
        # The preflight is answered before authentication (a browser sends no token).
        resp = await client.options("/api/v1/fitness/sync", headers=PREFLIGHT)
        assert resp.status_code == 204
        assert resp.headers["access-control-allow-origin"] == granted
        assert "authorization" in resp.headers["access-control-allow-headers"]
        assert "POST" in resp.headers["access-control-allow-methods"]
        assert "access-control-allow-credentials" not in resp.headers
        # Answers carry the grant, on the framework's routes, the lean ones and errors.
        for path in ("/api/v1/users/me", "/api/v1/leaderboard/nope", "/api/v1/nowhere"):
            resp = await client.get(path, headers={**auth("ann"), "Origin": APP})
            assert resp.headers["access-control-allow-origin"] == granted, path
            assert "retry-after" in resp.headers["access-control-expose-headers"]
        # Without an Origin (not a browser's cross-site call), nothing is added.
        resp = await client.get("/api/v1/users/me", headers=auth("ann"))
        assert "access-control-allow-origin" not in resp.headers


async def test_cors_refuses_other_origins(tmp_path: Path, redis_url: str) -> None:
    settings = make_settings(tmp_path, redis_url, cors_origins=[APP])
    async with running_app(settings) as (_, client):
        evil = {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
        resp = await client.options("/api/v1/fitness/sync", headers=evil)
        body = assert_error(resp, 403, "origin_not_allowed")
        assert "evil.example" in body["message"]
        assert "access-control-allow-origin" not in resp.headers
        # A simple request from it is served (the token decides) but carries no grant,
        # so the browser keeps the answer from the page.
        resp = await client.get("/api/v1/users/me", headers={**auth("ann"), **evil})
        assert resp.status_code == 200
        assert "access-control-allow-origin" not in resp.headers
