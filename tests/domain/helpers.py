"""Small HTTP helpers shared by the domain tests (everything goes through the API)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from healthcomp.core.clock import FixedClock
from tests.conftest import SERVICE_AUTH, auth

API = "/api/v1"


def at(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    """A UTC instant, for moving the test clock."""
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def comp_body(cid: str | None = None, **fields: Any) -> dict[str, Any]:
    """A valid competition body: November, steps, ranked, unless overridden."""
    body: dict[str, Any] = {
        "name": f"Competition {cid or 'x'}",
        "metric": "steps",
        "start_date": "2026-11-01",
        "end_date": "2026-11-30",
    }
    if cid is not None:
        body["id"] = cid
    body.update(fields)
    return body


def app_clock(client: httpx.AsyncClient) -> FixedClock:
    """The clock of the app behind an ASGI test client."""
    transport = client._transport
    assert isinstance(transport, httpx.ASGITransport)
    clock = transport.app.state.ctx.clock  # type: ignore[attr-defined]
    assert isinstance(clock, FixedClock)
    return clock


async def create_comp(
    client: httpx.AsyncClient, cid: str | None = None, *, org: str = "org", **fields: Any
) -> dict[str, Any]:
    """Created by `org` at most 7 days after its start (a user organizer may backdate
    a window that far): the clock steps back for the creation when it must."""
    body = comp_body(cid, **fields)
    clock = app_clock(client)
    now = clock.at
    latest = datetime.fromisoformat(body["start_date"]).replace(tzinfo=UTC) + timedelta(days=7)
    clock.at = min(now, latest)
    try:
        resp = await client.post(f"{API}/competitions", json=body, headers=auth(org))
    finally:
        clock.at = now
    assert resp.status_code == 201, resp.text
    data: dict[str, Any] = resp.json()["data"]
    return data


async def join(client: httpx.AsyncClient, cid: str, *users: str) -> None:
    for user in users:
        resp = await client.post(f"{API}/competitions/{cid}/join", headers=auth(user))
        assert resp.status_code == 200, resp.text


async def disqualify(client: httpx.AsyncClient, cid: str, user: str, reason: str) -> None:
    """The organizer (`org`) disqualifies `user`."""
    resp = await client.post(
        f"{API}/competitions/{cid}/participants/{user}/disqualify",
        json={"reason": reason},
        headers=auth("org"),
    )
    assert resp.status_code == 200, resp.text


def rec(day: str, steps: int = 0, source: str = "phone", **metrics: Any) -> dict[str, Any]:
    return {"date": day, "steps": steps, "source": source, **metrics}


async def sync_raw(
    client: httpx.AsyncClient, user: str | None, body: dict[str, Any]
) -> httpx.Response:
    headers = SERVICE_AUTH if user is None else auth(user)
    return await client.post(f"{API}/fitness/sync", json=body, headers=headers)


async def sync(client: httpx.AsyncClient, user: str, *records: dict[str, Any]) -> dict[str, Any]:
    """A batch sync by the user themself; asserts success and returns `data`."""
    resp = await sync_raw(client, user, {"records": list(records)})
    assert resp.status_code == 200, resp.text
    data: dict[str, Any] = resp.json()["data"]
    return data


async def board(
    client: httpx.AsyncClient, cid: str, viewer: str = "org", **params: Any
) -> dict[str, Any]:
    resp = await client.get(f"{API}/leaderboard/{cid}", params=params, headers=auth(viewer))
    assert resp.status_code == 200, resp.text
    data: dict[str, Any] = resp.json()["data"]
    return data


async def standings(
    client: httpx.AsyncClient, cid: str, viewer: str = "org"
) -> list[tuple[str, int, int]]:
    """(user_id, rank, score) of every entry, in board order."""
    data = await board(client, cid, viewer, limit=1000)
    return [(e["user_id"], e["rank"], e["score"]) for e in data["entries"]]


async def history(
    client: httpx.AsyncClient, user: str, first: str = "2026-10-01", last: str = "2026-11-30"
) -> list[dict[str, Any]]:
    resp = await client.get(
        f"{API}/fitness/history/{user}", params={"from": first, "to": last}, headers=auth(user)
    )
    assert resp.status_code == 200, resp.text
    days: list[dict[str, Any]] = resp.json()["data"]["days"]
    return days


async def stats(
    client: httpx.AsyncClient, user: str, viewer: str | None = None, **params: Any
) -> dict[str, Any]:
    headers = auth(viewer or user)
    resp = await client.get(f"{API}/fitness/stats/{user}", params=params, headers=headers)
    assert resp.status_code == 200, resp.text
    data: dict[str, Any] = resp.json()["data"]
    return data


def detail_fields(resp: httpx.Response) -> set[str]:
    """The `field` of every item in an error's `details`."""
    return {d.get("field") for d in resp.json().get("details") or []}
