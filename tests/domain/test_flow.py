"""The core flow end to end: create, join, sync, leaderboard, stats."""

from __future__ import annotations

import httpx

from tests.conftest import SERVICE_AUTH, assert_error, auth

COMP = {
    "id": "nov",
    "name": "November steps",
    "metric": "steps",
    "start_date": "2026-11-03",
    "end_date": "2026-11-30",
}


async def test_create_join_sync_rank(client: httpx.AsyncClient) -> None:
    resp = await client.post("/api/v1/competitions", json=COMP, headers=auth("org"))
    assert resp.status_code == 201, resp.text
    comp = resp.json()["data"]
    assert comp["status"] == "active" and comp["created_by"] == "org"
    for user in ("a", "b", "c"):
        r = await client.post("/api/v1/competitions/nov/join", headers=auth(user))
        assert r.status_code == 200, r.text
    assert_error(await client.post("/api/v1/competitions/nov/join", headers=auth("a")), 409)

    r = await client.post(
        "/api/v1/fitness/sync",
        headers=auth("a"),
        json={"date": "2026-11-05", "steps": 8000, "source": "phone"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["data"]["competitions"] == [
        {"competition_id": "nov", "score": 8000, "rank": 1, "previous_rank": 1}
    ]
    # Same day from the watch: max, not sum.
    r = await client.post(
        "/api/v1/fitness/sync",
        headers=auth("a"),
        json={"records": [{"date": "2026-11-05", "steps": 7000, "source": "watch"}]},
    )
    assert r.json()["data"]["competitions"][0]["score"] == 8000
    r = await client.post(
        "/api/v1/fitness/sync",
        headers=auth("b"),
        json={
            "records": [
                {"date": "2026-11-05", "steps": 5000},
                {"date": "2026-11-06", "steps": 3000},
            ]
        },
    )
    assert r.json()["data"]["competitions"][0] == {
        "competition_id": "nov",
        "score": 8000,
        "rank": 1,
        "previous_rank": 2,
    }
    r = await client.get("/api/v1/leaderboard/nov", headers=auth("c"))
    board = r.json()["data"]
    assert [(e["user_id"], e["rank"], e["score"]) for e in board["entries"]] == [
        ("a", 1, 8000),
        ("b", 1, 8000),
        ("c", 3, 0),
    ]
    assert board["me"]["user_id"] == "c" and board["total_count"] == 3

    r = await client.get("/api/v1/leaderboard/nov?around=me&limit=1", headers=auth("b"))
    assert [e["user_id"] for e in r.json()["data"]["entries"]] == ["b"]

    r = await client.post(
        "/api/v1/leaderboard/update",
        headers=SERVICE_AUTH,
        json={"user_id": "c", "competition_id": "nov", "steps": 9000, "distance": 0, "calories": 0},
    )
    assert r.status_code == 200, r.text
    assert r.json()["data"]["entry"]["rank"] == 1

    r = await client.get("/api/v1/fitness/stats/b", headers=auth("b"))
    assert r.status_code == 200, r.text
    stats = r.json()["data"]
    assert stats["totals"]["steps"] == 8000
    assert stats["competitions"][0]["rank"] == 2

    r = await client.get("/api/v1/fitness/stats/b?competition_id=nov", headers=auth("a"))
    assert r.status_code == 200, r.text
    r = await client.get(
        "/api/v1/fitness/history/a?from=2026-11-01&to=2026-11-10", headers=auth("a")
    )
    day = r.json()["data"]["days"][0]
    assert day["steps"] == 8000 and set(day["sources"]) == {"phone", "watch"}

    r = await client.get("/api/v1/users/a/competitions", headers=auth("a"))
    assert r.json()["data"]["competitions"][0]["competition_id"] == "nov"
    r = await client.get("/api/v1/competitions?status=active", headers=auth("a"))
    assert r.json()["data"]["total_count"] == 1
