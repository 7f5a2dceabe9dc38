"""Leaderboards: ranking, tie order, windows, pages, names, and the trusted score write."""

from __future__ import annotations

from typing import Any

import httpx

from healthcomp.activity.schemas import SyncResult
from healthcomp.core.clock import FixedClock
from healthcomp.core.context import AppContext
from healthcomp.engine import reads as boards
from healthcomp.leaderboard.schemas import Leaderboard, ScoreUpdateResult
from healthcomp.users.schemas import Profile
from tests.conftest import SERVICE_AUTH, assert_error, auth
from tests.domain.helpers import API, board, create_comp, join, rec, standings, sync

ENTRY_KEYS = {
    "user_id",
    "user_name",
    "competition_id",
    "score",
    "rank",
    "steps",
    "distance",
    "calories",
    "active_minutes",
    "last_synced_at",
    "updated_at",
}


async def _field(
    client: httpx.AsyncClient, clock: FixedClock, scores: dict[str, int], cid: str = "c"
) -> None:
    """A competition where each user synced their score on 2026-11-03, in dict order,
    one second apart."""
    await create_comp(client, cid)
    await join(client, cid, *scores)
    for user, score in scores.items():
        if score:
            await sync(client, user, rec("2026-11-03", score))
        clock.advance(seconds=1)


async def test_standard_competition_ranking(client: httpx.AsyncClient, clock: FixedClock) -> None:
    await _field(client, clock, {"a": 9000, "b": 5000, "c": 5000, "d": 1000, "e": 0, "f": 0})
    data = await board(client, "c", "a")
    assert [(e["user_id"], e["rank"], e["score"]) for e in data["entries"]] == [
        ("a", 1, 9000),
        ("b", 2, 5000),
        ("c", 2, 5000),
        ("d", 4, 1000),
        ("e", 5, 0),
        ("f", 5, 0),
    ]
    assert data["total_count"] == 6 and data["competition_id"] == "c"
    entry = data["entries"][0]
    assert set(entry) >= ENTRY_KEYS
    assert entry["competition_id"] == "c" and entry["steps"] == 9000
    assert entry["distance"] == 0 and entry["last_synced_at"].endswith("Z")
    assert data["updated_at"] is not None


async def test_tie_listed_by_who_reached_first(
    client: httpx.AsyncClient, clock: FixedClock
) -> None:
    await create_comp(client, "c")
    await join(client, "c", "a", "b", "c")
    await sync(client, "c", rec("2026-11-03", 5000))
    clock.advance(seconds=5)
    await sync(client, "b", rec("2026-11-03", 5000))
    clock.advance(seconds=5)
    await sync(client, "a", rec("2026-11-03", 5000))
    assert await standings(client, "c") == [("c", 1, 5000), ("b", 1, 5000), ("a", 1, 5000)]
    # c drops and comes back: now the last to have reached 5000.
    clock.advance(seconds=5)
    await sync(client, "c", rec("2026-11-03", 4000))
    assert await standings(client, "c") == [("b", 1, 5000), ("a", 1, 5000), ("c", 3, 4000)]
    clock.advance(seconds=5)
    await sync(client, "c", rec("2026-11-03", 5000))
    assert await standings(client, "c") == [("b", 1, 5000), ("a", 1, 5000), ("c", 1, 5000)]
    # A sync that does not change the score keeps the place.
    clock.advance(seconds=5)
    await sync(client, "b", rec("2026-11-03", 5000), rec("2026-10-20", 0))
    await sync(client, "b", rec("2026-11-03", 3000, source="watch"))
    assert await standings(client, "c") == [("b", 1, 5000), ("a", 1, 5000), ("c", 1, 5000)]


async def test_ties_in_the_same_instant_go_by_arrival(client: httpx.AsyncClient) -> None:
    # The service's clock stands still here: the order comes from the Redis server's
    # clock, strictly increasing per competition, so the first write to arrive leads.
    await create_comp(client, "c")
    await join(client, "c", "zed", "amy", "mo")
    for user in ("zed", "mo", "amy"):
        await sync(client, user, rec("2026-11-03", 700))
    assert await standings(client, "c") == [("zed", 1, 700), ("mo", 1, 700), ("amy", 1, 700)]


async def _ids(client: httpx.AsyncClient, viewer: str, **params: Any) -> list[str]:
    data = await board(client, "c", viewer, **params)
    return [e["user_id"] for e in data["entries"]]


async def test_around(client: httpx.AsyncClient, clock: FixedClock) -> None:
    # u0 leads, u9 trails; u4, u5, u6 tie (reached in that order).
    scores = {f"u{i}": 10000 - i * 1000 for i in range(10)}
    scores["u5"] = scores["u6"] = scores["u4"]
    await _field(client, clock, scores)
    order = [f"u{i}" for i in range(10)]
    assert [u for u, _, _ in await standings(client, "c")] == order

    assert await _ids(client, "u0", around="me", limit=3) == ["u0", "u1", "u2"]
    assert await _ids(client, "u1", around="me", limit=3) == ["u0", "u1", "u2"]
    assert await _ids(client, "u9", around="me", limit=3) == ["u7", "u8", "u9"]
    assert await _ids(client, "u9", around="me", limit=4) == ["u6", "u7", "u8", "u9"]
    assert await _ids(client, "u3", around="me", limit=3) == ["u2", "u3", "u4"]
    assert await _ids(client, "u5", around="me", limit=3) == ["u4", "u5", "u6"]
    assert await _ids(client, "u6", around="me", limit=5) == ["u4", "u5", "u6", "u7", "u8"]
    assert await _ids(client, "u5", around="me", limit=1) == ["u5"]
    assert await _ids(client, "u5", around="me", limit=100) == order
    data = await board(client, "c", "u5", around="me", limit=3)
    assert [e["rank"] for e in data["entries"]] == [5, 5, 5]
    assert data["offset"] == 4 and data["total_count"] == 10
    assert data["me"]["user_id"] == "u5" and data["me"]["rank"] == 5

    # Around another participant: anyone may look.
    assert await _ids(client, "org", around="u8", limit=3) == ["u7", "u8", "u9"]
    assert await _ids(client, "u0", around="u2", limit=3) == ["u1", "u2", "u3"]
    resp = await client.get(f"{API}/leaderboard/c?around=nobody", headers=auth("u0"))
    assert_error(resp, 404)
    resp = await client.get(f"{API}/leaderboard/c?around=me", headers=auth("org"))
    assert_error(resp, 404)
    resp = await client.get(f"{API}/leaderboard/c?around=a%20b", headers=auth("u0"))
    assert_error(resp, 422)


async def test_pages_cover_everyone_once(client: httpx.AsyncClient, clock: FixedClock) -> None:
    scores = {f"p{i:02d}": (i // 3) * 100 for i in range(25)}
    await _field(client, clock, scores)
    full = await board(client, "c", "p00", limit=1000)
    assert full["total_count"] == 25
    expected = [(e["user_id"], e["rank"], e["score"]) for e in full["entries"]]
    assert len(expected) == 25
    # Ranks follow the standard rule over the whole board.
    for i, (_, rank, score) in enumerate(expected):
        assert rank == 1 + sum(1 for _, _, s in expected if s > score)
        if i:
            assert score <= expected[i - 1][2]
    seen: list[tuple[str, int, int]] = []
    for offset in range(0, 28, 7):
        data = await board(client, "c", "p00", limit=7, offset=offset)
        assert data["offset"] == offset and data["total_count"] == 25
        seen.extend((e["user_id"], e["rank"], e["score"]) for e in data["entries"])
    assert seen == expected
    assert (await board(client, "c", "p00", offset=25))["entries"] == []
    assert (await board(client, "c", "p00", offset=500, limit=5))["entries"] == []


async def test_me(client: httpx.AsyncClient) -> None:
    await create_comp(client, "c")
    await join(client, "c", "a", "b")
    await sync(client, "b", rec("2026-11-03", 10))
    data = await board(client, "c", "a", limit=1)
    assert [e["user_id"] for e in data["entries"]] == ["b"]
    assert data["me"]["user_id"] == "a" and data["me"]["rank"] == 2
    assert data["me"]["score"] == 0
    resp = await client.get(f"{API}/leaderboard/c", headers=auth("outsider"))
    assert_error(resp, 404, "competition_not_found")  # private
    assert (await board(client, "c", "org"))["me"] is None
    resp = await client.get(f"{API}/leaderboard/c", headers=SERVICE_AUTH)
    assert resp.status_code == 200 and resp.json()["data"]["me"] is None


async def test_display_names(client: httpx.AsyncClient) -> None:
    await create_comp(client, "c")
    await create_comp(client, "d")
    resp = await client.post(f"{API}/competitions/c/join", headers=auth("a", name="Alice L"))
    assert resp.status_code == 200
    resp = await client.post(f"{API}/competitions/c/join", headers=auth("b", email="bob@x.io"))
    assert resp.status_code == 200
    await join(client, "d", "a")
    names = {e["user_id"]: e["user_name"] for e in (await board(client, "c"))["entries"]}
    assert names == {"a": "Alice L", "b": "bob"}

    resp = await client.put(
        f"{API}/users/me/profile", json={"display_name": "  Queen   Alice "}, headers=auth("a")
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["data"]["display_name"] == "Queen Alice"
    for cid in ("c", "d"):
        entries = (await board(client, cid))["entries"]
        assert {e["user_id"]: e["user_name"] for e in entries}["a"] == "Queen Alice"
    me = (await client.get(f"{API}/users/me", headers=auth("a"))).json()["data"]
    assert me["display_name"] == "Queen Alice"
    # Names join in with later joins too.
    await create_comp(client, "e")
    await join(client, "e", "a")
    assert (await board(client, "e"))["entries"][0]["user_name"] == "Queen Alice"
    for bad in ({"display_name": ""}, {"display_name": "x" * 81}, {"avatar_url": "ftp://x"}):
        assert_error(await client.put(f"{API}/users/me/profile", json=bad, headers=auth("a")), 422)


async def test_name_of_user_joined_by_service(client: httpx.AsyncClient) -> None:
    await create_comp(client, "c")
    resp = await client.post(
        f"{API}/competitions/c/join", json={"user_id": "uma"}, headers=SERVICE_AUTH
    )
    assert resp.status_code == 200
    resp = await client.get(f"{API}/users/me", headers=auth("uma", name="Uma T"))
    assert resp.json()["data"]["display_name"] == "Uma T"
    assert (await board(client, "c"))["entries"][0]["user_name"] == "Uma T"


async def test_bad_requests(client: httpx.AsyncClient) -> None:
    await create_comp(client, "c")
    for params in ({"limit": 0}, {"limit": 1001}, {"offset": -1}, {"limit": "ten"}):
        resp = await client.get(f"{API}/leaderboard/c", params=params, headers=auth())
        assert_error(resp, 422)
    assert (await board(client, "c", limit=1000))["limit"] == 1000
    assert_error(
        await client.get(f"{API}/leaderboard/nope", headers=auth()), 404, "competition_not_found"
    )
    assert_error(await client.get(f"{API}/leaderboard/c"), 401)
    assert_error(
        await client.get(f"{API}/leaderboard/c", headers={"Authorization": "Bearer x.y.z"}), 401
    )


# --- trusted score writes ------------------------------------------------------------------


def _update(**fields: Any) -> dict[str, Any]:
    return {"competition_id": "c", "distance": 0, "calories": 0, **fields}


async def test_trusted_write(client: httpx.AsyncClient, ctx: AppContext) -> None:
    await create_comp(client, "c")
    await join(client, "c", "a", "b")
    await sync(client, "a", rec("2026-11-03", 1000, distance=700))
    await sync(client, "b", rec("2026-11-03", 3000))

    resp = await client.post(
        f"{API}/leaderboard/update",
        json=_update(user_id="a", steps=5000, reason="manual import"),
        headers=auth("org"),
    )
    assert resp.status_code == 200, resp.text
    data = resp.json()["data"]
    assert data["entry"]["user_id"] == "a"
    assert (data["entry"]["score"], data["entry"]["rank"]) == (5000, 1)
    assert data["entry"]["steps"] == 5000 and data["entry"]["distance"] == 0
    assert data["previous_rank"] == 2
    assert data["before"]["steps"] == 1000 and data["before"]["distance"] == 700
    assert data["after"]["steps"] == 5000 and data["after"]["distance"] == 0
    assert await standings(client, "c") == [("a", 1, 5000), ("b", 2, 3000)]

    log = await boards.audit_log(ctx, "c")
    assert len(log) == 1
    item = log[0]
    assert item["by"] == "org" and item["user_id"] == "a"
    assert item["reason"] == "manual import" and item["at"] > 0
    assert item["before"][0] == 1000 and item["after"][0] == 5000

    # Later syncs still count on top of the adjustment.
    result = await sync(client, "a", rec("2026-11-04", 2000))
    assert result["competitions"][0]["score"] == 7000
    result = await sync(client, "a", rec("2026-11-03", 1500))  # a correction of a synced day
    assert result["competitions"][0]["score"] == 7500
    me = (await board(client, "c", "a"))["me"]
    assert (me["steps"], me["distance"]) == (7500, 0)

    # The service may write too; values are absolute, not added.
    resp = await client.post(
        f"{API}/leaderboard/update", json=_update(user_id="b", steps=100), headers=SERVICE_AUTH
    )
    assert resp.status_code == 200, resp.text
    resp = await client.post(
        f"{API}/leaderboard/update", json=_update(user_id="b", steps=100), headers=SERVICE_AUTH
    )
    assert resp.json()["data"]["entry"]["score"] == 100
    assert await standings(client, "c") == [("a", 1, 7500), ("b", 2, 100)]
    log = await boards.audit_log(ctx, "c")
    assert [i["by"] for i in log] == ["org", "service", "service"]
    # The user's own activity is untouched.
    s = (await client.get(f"{API}/fitness/stats/b", headers=auth("b"))).json()["data"]
    assert s["totals"]["steps"] == 3000


async def test_trusted_write_seed_body(client: httpx.AsyncClient) -> None:
    """The seed's body: {user_id, competition_id, steps, distance, calories}."""
    await create_comp(client, "c", metric="distance")
    await join(client, "c", "a")
    body = {
        "user_id": "a",
        "competition_id": "c",
        "steps": 12000,
        "distance": 8500.4,
        "calories": 420.6,
    }
    resp = await client.post(f"{API}/leaderboard/update", json=body, headers=SERVICE_AUTH)
    assert resp.status_code == 200, resp.text
    entry = resp.json()["data"]["entry"]
    assert (entry["score"], entry["steps"], entry["distance"], entry["calories"]) == (
        8500,
        12000,
        8500,
        421,
    )


async def test_trusted_write_refusals(client: httpx.AsyncClient, ctx: AppContext) -> None:
    await create_comp(client, "c")
    await join(client, "c", "a", "b")
    url = f"{API}/leaderboard/update"
    assert_error(await client.post(url, json=_update(user_id="a", steps=1), headers=auth("a")), 403)
    assert_error(await client.post(url, json=_update(user_id="b", steps=1), headers=auth("a")), 403)
    assert_error(
        await client.post(url, json=_update(user_id="ghost", steps=1), headers=auth("org")), 404
    )
    assert_error(
        await client.post(
            url, json=_update(user_id="a", steps=1, competition_id="nope"), headers=SERVICE_AUTH
        ),
        404,
        "competition_not_found",
    )
    for body in (
        _update(user_id="a", steps=-1),
        _update(steps=1),
        _update(user_id="a b", steps=1),
        _update(user_id="a", steps=1, bonus=5),
        _update(user_id="a", steps="many"),
        {"user_id": "a", "competition_id": "c"},  # nothing to set
        {"user_id": "a", "steps": 1},
    ):
        assert_error(await client.post(url, json=body, headers=SERVICE_AUTH), 422)
    assert_error(await client.post(url, json=_update(user_id="a", steps=1)), 401)
    assert await standings(client, "c") == [("a", 1, 0), ("b", 1, 0)]
    assert await boards.audit_log(ctx, "c") == []

    await client.post(f"{API}/competitions/c/cancel", headers=auth("org"))
    assert_error(
        await client.post(url, json=_update(user_id="a", steps=1), headers=SERVICE_AUTH), 409
    )


async def test_goal_competition_scores_days_met(client: httpx.AsyncClient) -> None:
    await create_comp(
        client,
        "g",
        start_date="2026-11-01",
        end_date="2026-11-10",
        format="goal",
        goal={"daily_target": 10000, "min_days": 3},
    )
    await join(client, "g", "a", "b")
    result = await sync(
        client, "a", rec("2026-11-01", 12000), rec("2026-11-02", 9000), rec("2026-11-03", 10000)
    )
    assert result["competitions"][0]["score"] == 2
    await sync(client, "b", rec("2026-11-01", 50000), rec("2026-10-31", 50000))
    assert await standings(client, "g") == [("a", 1, 2), ("b", 2, 1)]
    # Another source lifts 11-02 over the target; a correction drops 11-01 below it.
    assert (await sync(client, "a", rec("2026-11-02", 10000, source="watch")))["competitions"][0][
        "score"
    ] == 3
    assert (await sync(client, "a", rec("2026-11-01", 5000)))["competitions"][0]["score"] == 2
    me = (await board(client, "g", "a"))["me"]
    assert me["score"] == 2 and me["steps"] == 5000 + 10000 + 10000


async def test_responses_match_declared_schemas(client: httpx.AsyncClient) -> None:
    await create_comp(client, "c")
    await join(client, "c", "a", "b")
    SyncResult.model_validate(await sync(client, "a", rec("2026-11-02", 5)))
    Leaderboard.model_validate(await board(client, "c", "a"))
    Leaderboard.model_validate(await board(client, "c", "org", around="a", limit=1))
    resp = await client.get(f"{API}/competitions/c/participants", headers=auth("a"))
    Leaderboard.model_validate(resp.json()["data"])
    resp = await client.post(
        f"{API}/leaderboard/update",
        json={"user_id": "b", "competition_id": "c", "steps": 5},
        headers=SERVICE_AUTH,
    )
    ScoreUpdateResult.model_validate(resp.json()["data"])
    resp = await client.get(f"{API}/users/me", headers=auth("a"))
    Profile.model_validate(resp.json()["data"])
