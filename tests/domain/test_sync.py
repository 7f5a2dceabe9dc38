"""Activity sync (SPEC §6.1): upserts, max across sources, validation, windows, repair."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import httpx
import pytest

from healthcomp.activity import service as activity_service
from healthcomp.core.clock import FixedClock, to_ms
from healthcomp.core.context import AppContext
from healthcomp.engine import reads, writes
from healthcomp.engine.codes import Reply
from healthcomp.engine.model import Push
from tests.conftest import assert_error, auth
from tests.domain.helpers import (
    API,
    at,
    board,
    create_comp,
    detail_fields,
    history,
    join,
    rec,
    standings,
    stats,
    sync,
    sync_raw,
)


async def _setup(client: httpx.AsyncClient, *users: str, cid: str = "c", **fields: Any) -> None:
    await create_comp(client, cid, **fields)
    await join(client, cid, *users)


async def _snapshot(client: httpx.AsyncClient, ctx: AppContext, user: str) -> dict[str, Any]:
    """Everything a rejected sync must leave untouched."""
    s = await stats(client, user)
    return {
        "history": await history(client, user),
        "totals": s["totals"],
        "board": await standings(client, "c"),
        "rec": await ctx.r.hgetall(ctx.keys.records(user)),
        "eff": await ctx.r.hgetall(ctx.keys.effective(user)),
        "owed": await ctx.r.hgetall(ctx.keys.owed(user)),
    }


# --- the body as original clients send it -------------------------------------------------


async def test_seed_single_record_body(client: httpx.AsyncClient) -> None:
    await _setup(client, "alice")
    body = {
        "user_id": "alice",
        "competition_id": "c",
        "date": "2026-11-05T08:30:00Z",
        "steps": 1000,
        "distance": 800.5,
        "calories": 50.2,
    }
    resp = await sync_raw(client, "alice", body)
    assert resp.status_code == 200, resp.text
    data = resp.json()["data"]
    assert data["records_accepted"] == 1
    assert data["competitions"] == [
        {"competition_id": "c", "score": 1000, "rank": 1, "previous_rank": 1}
    ]
    days = await history(client, "alice")
    assert len(days) == 1
    day = days[0]
    assert day["date"] == "2026-11-05"
    assert (day["steps"], day["calories"], day["active_minutes"]) == (1000, 50, 0)
    assert day["distance"] in (800, 801)  # whole metres
    assert list(day["sources"]) == ["google_fit"]
    entry = (await board(client, "c", "alice"))["me"]
    assert entry["steps"] == 1000 and entry["calories"] == 50
    assert entry["last_synced_at"] == "2026-11-10T12:00:00.000Z"


@pytest.mark.parametrize(
    ("raw", "day"),
    [
        ("2026-11-05T23:30:00-08:00", "2026-11-05"),  # 07:30 UTC on the 6th
        ("2026-11-06T01:30:00+09:00", "2026-11-06"),  # 16:30 UTC on the 5th
        ("2026-11-05T00:00:00+14:00", "2026-11-05"),
        ("2026-11-05", "2026-11-05"),
        ("2026-11-05T12:00:00.123456Z", "2026-11-05"),
    ],
)
async def test_datetime_gives_its_own_local_date(
    client: httpx.AsyncClient, raw: str, day: str
) -> None:
    resp = await sync_raw(client, "alice", {"date": raw, "steps": 10})
    assert resp.status_code == 200, resp.text
    assert [d["date"] for d in await history(client, "alice")] == [day]


async def test_resending_changes_nothing(client: httpx.AsyncClient, clock: FixedClock) -> None:
    await _setup(client, "a", "b")
    batch = [
        rec("2026-11-03", 4000, distance=3000),
        rec("2026-11-04", 6000, calories=200),
        rec("2026-11-04", 5000, source="watch", active_minutes=30),
    ]
    await sync(client, "b", rec("2026-11-03", 9000))
    for i in range(3):
        result = await sync(client, "a", *batch)
        clock.advance(seconds=5)
        assert result["competitions"] == [
            {"competition_id": "c", "score": 10000, "rank": 1, "previous_rank": 2 if i == 0 else 1}
        ]
    s = await stats(client, "a")
    assert s["totals"] == {"steps": 10000, "distance": 3000, "calories": 200, "active_minutes": 30}
    me = (await board(client, "c", "a"))["me"]
    assert (me["steps"], me["distance"], me["calories"], me["active_minutes"]) == (
        10000,
        3000,
        200,
        30,
    )
    assert await standings(client, "c") == [("a", 1, 10000), ("b", 2, 9000)]


async def test_lower_value_corrects(client: httpx.AsyncClient) -> None:
    await _setup(client, "a")
    await sync(client, "a", rec("2026-11-03", 8000), rec("2026-11-04", 1000))
    result = await sync(client, "a", rec("2026-11-03", 2500))
    assert result["competitions"][0]["score"] == 3500
    days = {d["date"]: d["steps"] for d in await history(client, "a")}
    assert days == {"2026-11-03": 2500, "2026-11-04": 1000}
    assert (await stats(client, "a"))["totals"]["steps"] == 3500
    # Down to zero is a correction too.
    result = await sync(client, "a", rec("2026-11-03", 0))
    assert result["competitions"][0]["score"] == 1000


async def test_last_record_of_a_batch_wins(client: httpx.AsyncClient) -> None:
    await _setup(client, "a")
    result = await sync(client, "a", rec("2026-11-03", 9000), rec("2026-11-03", 4000))
    assert result["competitions"][0]["score"] == 4000


async def test_sources_count_once(client: httpx.AsyncClient) -> None:
    await _setup(client, "a")
    await sync(client, "a", rec("2026-11-03", 7000, source="phone", distance=5000))
    result = await sync(client, "a", rec("2026-11-03", 6000, source="watch", distance=5600))
    assert result["competitions"][0]["score"] == 7000
    day = (await history(client, "a"))[0]
    assert (day["steps"], day["distance"]) == (7000, 5600)  # max per metric
    assert day["sources"]["phone"]["steps"] == 7000
    assert day["sources"]["watch"]["distance"] == 5600
    # The phone corrects down: the watch's value takes over.
    result = await sync(client, "a", rec("2026-11-03", 1000, source="phone"))
    assert result["competitions"][0]["score"] == 6000
    assert (await stats(client, "a"))["totals"]["steps"] == 6000


async def test_concurrent_sources_end_at_max(client: httpx.AsyncClient) -> None:
    await _setup(client, "a")
    values = random.Random(7).sample(range(1000, 90000), 50)
    resps = await asyncio.gather(
        *(
            sync_raw(client, "a", {"date": "2026-11-04", "steps": v, "source": f"s{i}"})
            for i, v in enumerate(values)
        )
    )
    assert all(r.status_code == 200 for r in resps), [r.text for r in resps if r.status_code != 200]
    assert await standings(client, "c") == [("a", 1, max(values))]
    day = (await history(client, "a"))[0]
    assert day["steps"] == max(values) and len(day["sources"]) == 50
    assert (await stats(client, "a"))["totals"]["steps"] == max(values)


async def test_concurrent_corrections_end_at_last_state(client: httpx.AsyncClient) -> None:
    """Concurrent syncs of several days, then a final sequential state: the board agrees."""
    await _setup(client, "a")
    days = [f"2026-11-0{d}" for d in range(1, 8)]
    rng = random.Random(11)
    await asyncio.gather(
        *(
            sync_raw(client, "a", {"date": rng.choice(days), "steps": rng.randint(0, 50000)})
            for _ in range(40)
        )
    )
    final = {d["date"]: d["steps"] for d in await history(client, "a")}
    assert await standings(client, "c") == [("a", 1, sum(final.values()))]


# --- validation ----------------------------------------------------------------------------

BAD_RECORDS: list[tuple[str, dict[str, Any], str]] = [
    ("steps over cap", rec("2026-11-04", 100_001), "records.1.steps"),
    ("negative steps", rec("2026-11-04", -1), "records.1.steps"),
    ("negative distance", rec("2026-11-04", 10, distance=-0.5), "records.1.distance"),
    ("distance over cap", rec("2026-11-04", 10, distance=250_001), "records.1.distance"),
    ("calories over cap", rec("2026-11-04", 10, calories=15_000.5), "records.1.calories"),
    ("minutes over cap", rec("2026-11-04", 10, active_minutes=1441), "records.1.active_minutes"),
    ("two days ahead", rec("2026-11-12", 10), "records.1.date"),
    ("not a date", rec("2026-11-31", 10), "records.1.date"),
    ("bad source", rec("2026-11-04", 10, source="a b"), "records.1.source"),
    ("float steps", rec("2026-11-04", 10.5), "records.1.steps"),  # type: ignore[arg-type]
    ("unknown field", {**rec("2026-11-04", 10), "floors": 3}, "records.1.floors"),
]


@pytest.mark.parametrize(
    ("bad", "field"), [pytest.param(b, f, id=name) for name, b, f in BAD_RECORDS]
)
async def test_batch_all_or_nothing(
    client: httpx.AsyncClient, ctx: AppContext, bad: dict[str, Any], field: str
) -> None:
    await _setup(client, "a")
    await sync(client, "a", rec("2026-11-02", 500))
    before = await _snapshot(client, ctx, "a")
    body = {"records": [rec("2026-11-03", 3000), bad, rec("2026-11-02", 9000)]}
    resp = await sync_raw(client, "a", body)
    assert_error(resp, 422, "validation_error")
    assert await _snapshot(client, ctx, "a") == before


@pytest.mark.parametrize(
    ("bad", "field"), [pytest.param(b, f, id=name) for name, b, f in BAD_RECORDS]
)
async def test_batch_error_names_field(
    client: httpx.AsyncClient, bad: dict[str, Any], field: str
) -> None:
    body = {"records": [rec("2026-11-03", 3000), bad]}
    resp = await sync_raw(client, "a", body)
    assert_error(resp, 422)
    assert field in detail_fields(resp), resp.json()
    assert all(f is None or not f.startswith("Record") for f in detail_fields(resp))


async def test_single_record_error_names_field(client: httpx.AsyncClient) -> None:
    resp = await sync_raw(client, "a", {"date": "2026-11-04", "steps": -5})
    assert_error(resp, 422)
    assert detail_fields(resp) == {"steps"}, resp.json()


async def test_batch_size_bound(client: httpx.AsyncClient) -> None:
    def many(n: int) -> list[dict[str, Any]]:
        return [rec("2026-11-01", i, source=f"s{i}") for i in range(n)]

    resp = await sync_raw(client, "a", {"records": many(401)})
    assert_error(resp, 422)
    assert (await client.get(f"{API}/fitness/stats/a", headers=auth("a"))).status_code == 404
    resp = await sync_raw(client, "a", {"records": []})
    assert_error(resp, 422)
    resp = await sync_raw(client, "a", {"records": many(400)})
    assert resp.status_code == 200, resp.text
    assert resp.json()["data"]["records_accepted"] == 400
    assert (await stats(client, "a"))["totals"]["steps"] == 399


async def test_sync_identity(client: httpx.AsyncClient) -> None:
    await _setup(client, "a", "b")
    # Another user's data: 403, in the body or in a record.
    for body in (
        {"user_id": "b", "date": "2026-11-03", "steps": 1},
        {"user_id": "b", "records": [rec("2026-11-03", 1)]},
        {"records": [{**rec("2026-11-03", 1), "user_id": "b"}]},
    ):
        assert_error(await sync_raw(client, "a", body), 403)
    # Two users in one batch: 422.
    body = {
        "records": [
            {**rec("2026-11-03", 1), "user_id": "a"},
            {**rec("2026-11-03", 1), "user_id": "b"},
        ]
    }
    assert_error(await sync_raw(client, "a", body), 422)
    # The service must name the user.
    assert_error(await sync_raw(client, None, {"date": "2026-11-03", "steps": 1}), 422)
    assert_error(await sync_raw(client, None, {"records": [rec("2026-11-03", 1)]}), 422)
    assert await standings(client, "c") == [("a", 1, 0), ("b", 1, 0)]
    resp = await sync_raw(client, None, {"user_id": "b", "date": "2026-11-03", "steps": 700})
    assert resp.status_code == 200, resp.text
    resp = await sync_raw(client, None, {"user_id": "a", "records": [rec("2026-11-03", 300)]})
    assert resp.status_code == 200, resp.text
    assert await standings(client, "c") == [("b", 1, 700), ("a", 2, 300)]
    # No token.
    assert_error(await client.post(f"{API}/fitness/sync", json={"date": "2026-11-03"}), 401)


async def test_competition_id_must_be_the_users(client: httpx.AsyncClient) -> None:
    await _setup(client, "a")
    await create_comp(client, "other", visibility="public")
    await create_comp(client, "hidden")
    body = {"competition_id": "other", "date": "2026-11-03", "steps": 100}
    assert_error(await sync_raw(client, "a", body), 403, "not_participant")
    # A private competition the user is not in is as unknown as a missing one.
    body = {"competition_id": "hidden", "date": "2026-11-03", "steps": 100}
    assert_error(await sync_raw(client, "a", body), 404, "competition_not_found")
    body = {"competition_id": "nope", "records": [rec("2026-11-03", 100)]}
    assert_error(await sync_raw(client, "a", body), 404, "competition_not_found")
    assert await history(client, "a") == []
    body = {"competition_id": "c", "records": [rec("2026-11-03", 100)]}
    resp = await sync_raw(client, "a", body)
    assert resp.status_code == 200, resp.text


# --- windows and the grace period ----------------------------------------------------------


async def test_window_edges(client: httpx.AsyncClient) -> None:
    await _setup(client, "a", start_date="2026-11-04", end_date="2026-11-10")
    result = await sync(client, "a", rec("2026-11-03", 50000), rec("2026-11-11", 40000))
    assert result["competitions"] == []
    assert await standings(client, "c") == [("a", 1, 0)]
    result = await sync(client, "a", rec("2026-11-04", 100))
    assert result["competitions"][0]["score"] == 100
    result = await sync(client, "a", rec("2026-11-10", 20))
    assert result["competitions"][0]["score"] == 120
    result = await sync(client, "a", rec("2026-11-03", 1), rec("2026-11-11", 2))
    assert result["competitions"] == []
    assert await standings(client, "c") == [("a", 1, 120)]
    assert (await stats(client, "a"))["totals"]["steps"] == 123


async def test_grace_period(client: httpx.AsyncClient, clock: FixedClock) -> None:
    # Ends 2026-11-10: over everywhere at 2026-11-11 12:00 UTC, grace until 11-12 12:00.
    await _setup(client, "a", "b", start_date="2026-11-05", end_date="2026-11-10")
    await sync(client, "a", rec("2026-11-06", 1000))
    clock.at = at(2026, 11, 11, 13)
    status = (await client.get(f"{API}/competitions/c", headers=auth())).json()["data"]["status"]
    assert status == "ended"
    result = await sync(client, "a", rec("2026-11-10", 2000))
    assert result["competitions"][0]["score"] == 3000
    clock.at = at(2026, 11, 12, 12)  # the last moment of grace
    result = await sync(client, "b", rec("2026-11-09", 500))
    assert result["competitions"][0]["score"] == 500
    clock.at = at(2026, 11, 12, 12, 0, 1)
    result = await sync(client, "a", rec("2026-11-09", 5000), rec("2026-11-06", 0))
    assert result["competitions"] == []
    assert {d["date"]: d["steps"] for d in await history(client, "a")} == {
        "2026-11-06": 0,
        "2026-11-09": 5000,
        "2026-11-10": 2000,
    }
    assert await standings(client, "c") == [("a", 1, 3000), ("b", 2, 500)]


async def test_zero_grace(client: httpx.AsyncClient, clock: FixedClock) -> None:
    await _setup(client, "a", start_date="2026-11-05", end_date="2026-11-10", grace_hours=0)
    clock.at = at(2026, 11, 11, 12)  # ends exactly now; no grace
    assert (await sync(client, "a", rec("2026-11-10", 10)))["competitions"][0]["score"] == 10
    clock.at = at(2026, 11, 11, 12, 0, 1)
    assert (await sync(client, "a", rec("2026-11-10", 99)))["competitions"] == []
    assert await standings(client, "c") == [("a", 1, 10)]


async def test_overlapping_competitions(client: httpx.AsyncClient) -> None:
    await _setup(client, "a", "b", cid="month")
    await _setup(client, "a", cid="week", start_date="2026-11-05", end_date="2026-11-11")
    await create_comp(client, "distance", metric="distance")
    await join(client, "distance", "a")
    await sync(client, "b", rec("2026-11-02", 3000))

    result = await sync(client, "a", rec("2026-11-06", 2000, distance=1500))
    assert result["competitions"] == [
        {"competition_id": "distance", "score": 1500, "rank": 1, "previous_rank": 1},
        {"competition_id": "month", "score": 2000, "rank": 2, "previous_rank": 2},
        {"competition_id": "week", "score": 2000, "rank": 1, "previous_rank": 1},
    ]
    result = await sync(client, "a", rec("2026-11-02", 4000))
    assert result["competitions"] == [
        {"competition_id": "distance", "score": 1500, "rank": 1, "previous_rank": 1},
        {"competition_id": "month", "score": 6000, "rank": 1, "previous_rank": 2},
    ]
    mine = (await client.get(f"{API}/users/a/competitions", headers=auth("a"))).json()["data"]
    got = {c["competition_id"]: (c["score"], c["rank"]) for c in mine["competitions"]}
    assert got == {"month": (6000, 1), "week": (2000, 1), "distance": (1500, 1)}


async def test_join_backfills(client: httpx.AsyncClient) -> None:
    await create_comp(client, "c", start_date="2026-11-02", end_date="2026-11-10")
    await sync(
        client,
        "a",
        rec("2026-11-01", 1000),
        rec("2026-11-02", 3000),
        rec("2026-11-06", 4000, source="watch"),
        rec("2026-11-06", 3500),
        rec("2026-11-11", 8000),
    )
    await join(client, "c", "a")
    assert await standings(client, "c") == [("a", 1, 7000)]
    me = (await board(client, "c", "a"))["me"]
    assert me["steps"] == 7000
    # Later syncs keep working on top of the backfilled days.
    result = await sync(client, "a", rec("2026-11-02", 3500))
    assert result["competitions"][0]["score"] == 7500


# --- crash repair --------------------------------------------------------------------------


async def test_crash_after_write_repaired_by_next_sync(
    client: httpx.AsyncClient, ctx: AppContext, clock: FixedClock
) -> None:
    await _setup(client, "a", "b")
    await sync(client, "b", rec("2026-11-01", 100))
    now_ms = to_ms(clock.now())
    # Step 1 of the saga only: records stored, days marked, nothing pushed.
    await writes.store(ctx, "a", now_ms, [("2026-11-05", "phone", (5000, 0, 0, 0))])
    assert await standings(client, "c") == [("b", 1, 100), ("a", 2, 0)]
    assert await ctx.r.hgetall(ctx.keys.owed("a"))
    clock.advance(seconds=3)
    # A later sync, even for a day outside every window, pushes what was left.
    result = await sync(client, "a", rec("2026-10-01", 1))
    assert result["competitions"] == [
        {"competition_id": "c", "score": 5000, "rank": 1, "previous_rank": 2}
    ]
    assert await standings(client, "c") == [("a", 1, 5000), ("b", 2, 100)]
    assert await ctx.r.hgetall(ctx.keys.owed("a")) == {}


async def test_crash_after_write_repaired_by_repair(
    client: httpx.AsyncClient, ctx: AppContext, clock: FixedClock
) -> None:
    await _setup(client, "a")
    await create_comp(client, "c2", start_date="2026-11-04", end_date="2026-11-10")
    await join(client, "c2", "a")
    await sync(client, "a", rec("2026-11-05", 1000))
    now_ms = to_ms(clock.now())
    records = [
        ("2026-11-05", "phone", (4000, 10, 0, 0)),
        ("2026-11-06", "watch", (2500, 0, 0, 0)),
        ("2026-11-20", "watch", (100, 0, 0, 0)),
    ]
    # The competitions come from the user's own record of their windows.
    targets = {
        ("c", "2026-11-05"),
        ("c", "2026-11-06"),
        ("c", "2026-11-20"),
        ("c2", "2026-11-05"),
        ("c2", "2026-11-06"),
    }
    code, pushes = await writes.store(ctx, "a", now_ms, records)
    assert code is Reply.OK and isinstance(pushes, list)
    assert {(p.competition_id, p.day) for p in pushes} == targets
    assert await standings(client, "c") == [("a", 1, 1000)]
    assert await standings(client, "c2") == [("a", 1, 1000)]
    # The same step replayed (the client retried before any push): still nothing pushed.
    await writes.store(ctx, "a", now_ms, records)
    assert len(await ctx.r.hgetall(ctx.keys.owed("a"))) == 5

    assert await activity_service.repair(ctx, "a") == 5
    assert await standings(client, "c") == [("a", 1, 6600)]
    assert await standings(client, "c2") == [("a", 1, 6500)]
    assert await ctx.r.hgetall(ctx.keys.owed("a")) == {}
    assert await activity_service.repair(ctx, "a") == 0
    assert await standings(client, "c") == [("a", 1, 6600)]


async def test_late_push_of_an_older_version_is_ignored(
    client: httpx.AsyncClient, ctx: AppContext, clock: FixedClock
) -> None:
    await _setup(client, "a")
    await sync(client, "a", rec("2026-11-05", 9000))
    await sync(client, "a", rec("2026-11-05", 4000))
    eff = await reads.effective_days(ctx, "a")
    ver = int(eff["2026-11-05"]["ver"])
    assert ver >= 2
    now_ms = to_ms(clock.now())
    # A push of the older value arriving late (a slow concurrent request).
    old = Push("c", "2026-11-05", 1, ver - 1, (9000, 0, 0, 0), now_ms)
    applied = (await writes.push(ctx, "a", [old], now_ms))["c"]
    assert not applied.changed and applied.score == 4000
    # The same version replayed: harmless.
    same = Push("c", "2026-11-05", 1, ver, (4000, 0, 0, 0), now_ms)
    applied = (await writes.push(ctx, "a", [same], now_ms))["c"]
    assert applied.score == 4000 and not applied.changed
    assert await standings(client, "c") == [("a", 1, 4000)]


async def test_sync_for_non_member_days_only_stores(client: httpx.AsyncClient) -> None:
    await create_comp(client, "c")
    resp = await sync_raw(client, "lonely", {"records": [rec("2026-11-03", 321)]})
    assert resp.status_code == 200, resp.text
    assert resp.json()["data"] == {"records_accepted": 1, "competitions": []}
    assert (await stats(client, "lonely"))["totals"]["steps"] == 321
    assert (await board(client, "c"))["total_count"] == 0
    # Caps are inclusive.
    resp = await sync_raw(
        client,
        "lonely",
        {
            "date": "2026-11-04",
            "steps": 100_000,
            "distance": 250_000,
            "calories": 15_000,
            "active_minutes": 1440,
        },
    )
    assert resp.status_code == 200, resp.text
    resp = await sync_raw(client, "lonely", {"date": "2026-11-11", "steps": 1})
    assert resp.status_code == 200, resp.text  # one day ahead of UTC is allowed
