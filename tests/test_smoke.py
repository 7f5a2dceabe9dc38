from __future__ import annotations

import httpx

from tests.conftest import assert_error, auth


async def test_health_touches_nothing(client: httpx.AsyncClient) -> None:
    resp = await client.get("/health")
    assert resp.status_code == 200
    assert resp.json() == {"status": "healthy", "service": "python-backend", "version": "0.1.0"}


async def test_ready(client: httpx.AsyncClient) -> None:
    resp = await client.get("/health/ready")
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "ready"


async def test_profile_roundtrip(client: httpx.AsyncClient) -> None:
    resp = await client.get("/api/v1/users/me", headers=auth("bob", name="Bob B"))
    assert resp.json()["data"]["display_name"] == "Bob B"
    resp = await client.put(
        "/api/v1/users/me/profile", headers=auth("bob"), json={"display_name": "Bobby"}
    )
    assert resp.status_code == 200
    resp = await client.get("/api/v1/users/me", headers=auth("bob"))
    assert resp.json()["data"]["display_name"] == "Bobby"


async def test_unknown_route(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/nope"), 404, "not_found")
