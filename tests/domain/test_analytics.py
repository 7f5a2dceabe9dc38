"""GET /api/v1/fitness/analytics/{id} (SPEC §6.6): the field per day, the score
distribution, the movers of the last 24 hours and the projections, against figures
worked out by hand; who may see which view; and the projected finish in the stats."""

from __future__ import annotations

import itertools
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from healthcomp.analytics import service as analytics
from healthcomp.app import create_app
from healthcomp.competitions import access
from healthcomp.core.clock import FixedClock, to_ms
from healthcomp.core.context import AppContext
from healthcomp.core.settings import Settings
from healthcomp.engine import reads
from tests.conftest import SERVICE_AUTH, assert_error, auth
from tests.domain.helpers import API, app_clock, at, create_comp, disqualify, join, rec, stats, sync


async def get_analytics(
    client: httpx.AsyncClient, cid: str, who: str = "org", **params: Any
) -> dict[str, Any]:
    headers = SERVICE_AUTH if who == "service" else auth(who)
    resp = await client.get(f"{API}/fitness/analytics/{cid}", params=params, headers=headers)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["success"] is True
    data: dict[str, Any] = body["data"]
    return data


def by_user(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["user_id"]: r for r in rows}


def chances(data: dict[str, Any]) -> dict[str, float]:
    return {s["user_id"]: s["chance_to_win"] for s in data["leaders"]}


def daily(first_day: int, values: list[int]) -> list[dict[str, Any]]:
    """Records for consecutive November days from `first_day` on."""
    return [rec(f"2026-11-{first_day + i:02d}", v) for i, v in enumerate(values)]


# --- the numbers -----------------------------------------------------------------------

# Joined: a, b, c on 2026-11-01, d on 2026-11-02; read on 2026-11-04 (4 of 30 days).
FIELD = {
    "a": {"2026-11-01": 1000, "2026-11-02": 3000, "2026-11-03": 5000, "2026-11-04": 2000},
    "b": {"2026-11-01": 2000, "2026-11-02": 2000, "2026-11-03": 0, "2026-11-04": 4000},
    "c": {"2026-11-01": 3000, "2026-11-03": 7001},
    "d": {"2026-11-02": 6000, "2026-11-04": 2000},
}


async def seed_field(client: httpx.AsyncClient, cid: str = "num") -> None:
    clock = app_clock(client)
    clock.at = at(2026, 11, 1, 9)
    await create_comp(client, cid)
    await join(client, cid, "a", "b", "c")
    clock.at = at(2026, 11, 2, 9)
    await join(client, cid, "d")
    clock.at = at(2026, 11, 4, 12)
    for user, days in FIELD.items():
        await sync(client, user, *(rec(d, s) for d, s in days.items()))


async def test_days_distribution_and_leaders_match_the_hand_worked_figures(
    client: httpx.AsyncClient,
) -> None:
    await seed_field(client)
    data = await get_analytics(client, "num")
    assert (data["competition_id"], data["metric"], data["format"]) == ("num", "steps", "ranked")
    assert (data["status"], data["view"], data["participants"]) == ("active", "full", 4)
    assert data["window"] == {
        "start_date": "2026-11-01",
        "end_date": "2026-11-30",
        "days": 30,
        "days_elapsed": 4,
        "days_remaining": 26,
    }
    # Participants: the field (everyone on the board, every day); active: counted above
    # zero (b's 0 is not); joined: the sign-ups of that UTC day.
    assert data["days"] == [
        {"date": "2026-11-01", "participants": 4, "active_participants": 3, "joined": 3,
         "left": 0, "total": 6000, "median": 2000},
        {"date": "2026-11-02", "participants": 4, "active_participants": 3, "joined": 1,
         "left": 0, "total": 11000, "median": 3000},
        {"date": "2026-11-03", "participants": 4, "active_participants": 2, "joined": 0,
         "left": 0, "total": 12001, "median": 6000.5},
        {"date": "2026-11-04", "participants": 4, "active_participants": 3, "joined": 0,
         "left": 0, "total": 8000, "median": 2000},
    ]  # fmt: skip

    # Scores: a 11000, c 10001, b 8000, d 8000 (b reached it first).
    dist = data["distribution"]
    assert (dist["count"], dist["min"], dist["max"]) == (4, 8000, 11000)
    assert dist["mean"] == pytest.approx(37001 / 4)
    # Linear between the nearest of [8000, 8000, 10001, 11000], at q x 3.
    assert dist["percentiles"] == pytest.approx(
        {"p10": 8000, "p25": 8000, "p50": 9000.5, "p75": 10250.75, "p90": 10700.3,
         "p99": 10970.03}
    )  # fmt: skip
    bins = dist["histogram"]
    assert sum(b["count"] for b in bins) == dist["count"] == 4
    assert bins[0]["from"] == 0 and bins[-1]["to"] >= 11000
    assert all(b["to"] == nxt["from"] for b, nxt in itertools.pairwise(bins))
    for score in (8000, 10001, 11000):  # each score in the one bin that holds it
        holding = [
            b for i, b in enumerate(bins)
            if b["from"] <= score < b["to"] or (i == len(bins) - 1 and score == b["to"])
        ]  # fmt: skip
        assert len(holding) == 1, (score, bins)
    counted = {(b["from"], b["to"]): b["count"] for b in bins if b["count"]}
    assert sorted(counted.values()) == [2, 2]  # {8000, 8000} and {10001, 11000}

    leaders = data["leaders"]
    assert [(s["user_id"], s["rank"], s["score"]) for s in leaders] == [
        ("a", 1, 11000), ("c", 2, 10001), ("b", 3, 8000), ("d", 3, 8000),
    ]  # fmt: skip
    assert data["simulations"] > 0
    for s in leaders:
        low, high = s["projected_range"]
        assert s["score"] <= low <= s["projected_score"] <= high
        assert 1 <= s["projected_rank"] <= 4
        assert 0.0 <= s["chance_to_win"] <= 1.0
    # The pace so far over the remaining days: score + 26 x score / 4.
    for s in leaders:
        assert s["projected_score"] == round(s["score"] + 26 * s["score"] / 4)
    assert [s["projected_rank"] for s in leaders] == [1, 2, 3, 3]
    assert sum(chances(data).values()) == pytest.approx(1.0, abs=1e-9)

    # limit cuts the leaders (and the movers), not the figures of the field.
    top = await get_analytics(client, "num", limit=2)
    assert [s["user_id"] for s in top["leaders"]] == ["a", "c"] and len(top["movers"]) <= 2
    assert top["distribution"] == dist and top["days"] == data["days"]


async def test_a_participant_sees_the_summary_with_their_own_standing(
    client: httpx.AsyncClient,
) -> None:
    await seed_field(client)
    full = await get_analytics(client, "num")
    mine = await get_analytics(client, "num", "b")
    assert mine["view"] == "summary"
    assert mine.get("flags") is None and mine.get("disqualified") is None
    assert mine["me"] == by_user(full["leaders"])["b"]
    assert (mine["me"]["rank"], mine["me"]["score"]) == (3, 8000)
    for key in ("days", "distribution", "leaders", "movers", "window", "event_id"):
        assert mine[key] == full[key], key
    # The organizer is not on the board: no `me`.
    assert full["me"] is None
    assert set(full["flags"]) >= {"total", "open", "dismissed", "excluded", "open_by_kind"}
    assert full["flags"]["total"] == 0 and full["disqualified"] == []


# --- movers ----------------------------------------------------------------------------


async def test_movers_are_the_gains_of_the_last_24_hours(client: httpx.AsyncClient) -> None:
    clock = app_clock(client)
    clock.at = at(2026, 11, 1, 9)
    await create_comp(client, "mv")
    await join(client, "mv", "a", "b", "c")
    clock.at = at(2026, 11, 3, 12)
    await sync(client, "a", rec("2026-11-03", 5000))
    await sync(client, "b", rec("2026-11-03", 4000))
    await sync(client, "c", rec("2026-11-03", 3000))
    # Within the hour: each gained their whole score, all level at zero before.
    data = await get_analytics(client, "mv")
    assert [(m["user_id"], m["gain"], m["rank"], m["previous_rank"]) for m in data["movers"]] == [
        ("a", 5000, 1, 1), ("b", 4000, 2, 1), ("c", 3000, 3, 1),
    ]  # fmt: skip

    # A day and an hour later nothing has moved since: no movers.
    clock.at = at(2026, 11, 4, 13)
    assert (await get_analytics(client, "mv"))["movers"] == []

    # c walks past both; a newcomer walks past everyone but is not a mover.
    await sync(client, "c", rec("2026-11-04", 9000))
    await join(client, "mv", "d")
    await sync(client, "d", rec("2026-11-04", 15000))
    data = await get_analytics(client, "mv")
    assert [(m["user_id"], m["score"], m["gain"], m["rank"], m["previous_rank"])
            for m in data["movers"]] == [("c", 12000, 9000, 2, 3)]  # fmt: skip
    assert isinstance(data["movers"][0]["user_name"], str)
    assert [s["user_id"] for s in data["leaders"]] == ["d", "c", "a", "b"]

    # 25 hours on, d's join is over a day old and nothing moved since: no movers again.
    clock.at = at(2026, 11, 5, 14)
    assert (await get_analytics(client, "mv"))["movers"] == []


# --- projections -----------------------------------------------------------------------


async def test_a_leader_far_ahead_is_all_but_certain_to_win(client: httpx.AsyncClient) -> None:
    await create_comp(client, "far")
    await join(client, "far", "a", "b", "c")
    # Today is 2026-11-10: 10 of 30 days, each with some day-to-day variation.
    await sync(client, "a", *daily(1, [14000, 16000] * 5))
    await sync(client, "b", *daily(1, [3000, 5000] * 5))
    await sync(client, "c", *daily(1, [2000, 4000] * 5))
    data = await get_analytics(client, "far")
    leaders = by_user(data["leaders"])
    assert data["simulations"] > 0
    assert leaders["a"]["chance_to_win"] > 0.99
    assert leaders["a"]["projected_rank"] == 1
    assert leaders["a"]["projected_score"] == pytest.approx(150000 * 3, rel=0.01)
    assert sum(chances(data).values()) == pytest.approx(1.0, abs=1e-9)


async def test_identical_participants_have_near_equal_chances(client: httpx.AsyncClient) -> None:
    users = ["p", "q", "r", "s"]
    await create_comp(client, "same")
    await join(client, "same", *users)
    for user in users:
        await sync(client, user, *daily(1, [6000, 12000, 9000, 7000, 11000] * 2))
    data = await get_analytics(client, "same")
    got = chances(data)
    assert set(got) == set(users)
    for user in users:
        assert got[user] == pytest.approx(1 / 4, abs=0.05), got
    assert sum(got.values()) == pytest.approx(1.0, abs=1e-9)
    assert len({s["projected_score"] for s in data["leaders"]}) == 1
    assert {s["projected_rank"] for s in data["leaders"]} == {1}


async def test_the_same_data_gives_the_same_numbers(
    client: httpx.AsyncClient, ctx: AppContext, settings: Settings, clock: FixedClock
) -> None:
    await create_comp(client, "rep")
    await join(client, "rep", "a", "b", "c")
    await sync(client, "a", *daily(1, [9000, 11000, 7000, 12000, 8000] * 2))
    await sync(client, "b", *daily(1, [10000, 9500, 8000, 9000, 13000] * 2))
    await sync(client, "c", *daily(1, [4000, 15000, 6000, 14000, 10000] * 2))
    first = await get_analytics(client, "rep")
    assert 0 < max(chances(first).values()) < 1  # a real contest, not a certainty
    assert await get_analytics(client, "rep") == first
    # The worker's cache forgotten: computed again, the same.
    ctx.services.pop("analytics", None)
    assert await get_analytics(client, "rep") == first
    # Another app (another worker) on the same Redis: the same.
    other: FastAPI = create_app(settings, clock=clock)
    async with other.router.lifespan_context(other):
        transport = httpx.ASGITransport(app=other, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as second:
            assert await get_analytics(second, "rep") == first
            assert await get_analytics(second, "rep", "b") == await get_analytics(
                client, "rep", "b"
            )
    # And the computation itself, twice on the same inputs.
    stored = await access.get(ctx, "rep")
    inputs = await reads.analytics_inputs(ctx, "rep", "2026-11-01", "2026-11-10")
    assert inputs is not None
    now_ms = to_ms(clock.now())
    one = analytics.compute(stored, inputs, now_ms)
    two = analytics.compute(stored, inputs, now_ms)
    assert one == two
    assert {u: p.chance_to_win for u, p in (one.projections or {}).items()} == chances(first)
    assert {u: p.expected for u, p in (one.projections or {}).items()} == {
        s["user_id"]: s["projected_score"] for s in first["leaders"]
    }


async def test_before_the_start_nothing_is_projected(client: httpx.AsyncClient) -> None:
    await create_comp(client, "soon", start_date="2026-11-20", end_date="2026-11-29")
    await join(client, "soon", "a", "b")
    await sync(client, "a", rec("2026-11-10", 5000))  # outside the window
    data = await get_analytics(client, "soon", "a")
    assert data["status"] == "upcoming" and data["simulations"] == 0
    assert data["window"]["days_elapsed"] == 0 and data["window"]["days_remaining"] == 10
    assert data["days"] == []
    assert [s["user_id"] for s in data["leaders"]] == ["a", "b"]
    for s in [*data["leaders"], data["me"]]:
        assert s["score"] == 0 and s["rank"] == 1
        assert s["projected_score"] is None and s["projected_range"] is None
        assert s["projected_rank"] is None and s["chance_to_win"] is None
    assert data["distribution"]["count"] == 2 and data["distribution"]["max"] == 0
    assert sum(b["count"] for b in data["distribution"]["histogram"]) == 2
    stat = await stats(client, "a", competition_id="soon")
    assert stat["competition"]["projected_final_score"] is None


async def test_after_the_end_the_leader_has_won(client: httpx.AsyncClient) -> None:
    clock = app_clock(client)
    now = clock.at
    clock.at = at(2026, 11, 5, 12)  # synced within the window
    await create_comp(client, "over", start_date="2026-11-01", end_date="2026-11-05")
    await join(client, "over", "a", "b", "c")
    await sync(client, "a", *daily(1, [3000, 3000, 3000]))
    await sync(client, "b", *daily(1, [5000, 1000, 2999]))  # 8999, one short
    clock.at = now  # 2026-11-10: over, in or past the grace period
    data = await get_analytics(client, "over")
    assert data["window"]["days_elapsed"] == 5 and data["window"]["days_remaining"] == 0
    got = chances(data)
    assert got == {"a": 1.0, "b": 0.0, "c": 0.0}
    assert [s["projected_score"] for s in data["leaders"]] == [9000, 8999, 0]
    assert [s["projected_range"] for s in data["leaders"]] == [[9000, 9000], [8999, 8999], [0, 0]]


async def test_a_tie_at_the_top_after_the_end_splits_the_win(client: httpx.AsyncClient) -> None:
    clock = app_clock(client)
    now = clock.at
    clock.at = at(2026, 11, 5, 12)
    await create_comp(client, "tie", start_date="2026-11-01", end_date="2026-11-05")
    await join(client, "tie", "a", "b", "c")
    await sync(client, "a", rec("2026-11-02", 4000))
    await sync(client, "b", rec("2026-11-03", 4000))
    await sync(client, "c", rec("2026-11-03", 100))
    clock.at = now
    data = await get_analytics(client, "tie")
    assert [s["rank"] for s in data["leaders"]] == [1, 1, 3]
    assert chances(data) == pytest.approx({"a": 0.5, "b": 0.5, "c": 0.0}, abs=1e-12)


async def test_nobody_can_win_with_nothing(client: httpx.AsyncClient) -> None:
    await create_comp(client, "idle")
    await join(client, "idle", "a", "b")
    data = await get_analytics(client, "idle")
    assert data["simulations"] > 0
    assert chances(data) == {"a": 0.0, "b": 0.0}
    assert [s["projected_score"] for s in data["leaders"]] == [0, 0]


async def test_goal_competitions_project_goal_days(client: httpx.AsyncClient) -> None:
    goal = {"daily_target": 10000, "min_days": 5}
    await create_comp(
        client, "goal", format="goal", goal=goal, payout={"scheme": "qualifiers_split"}
    )
    await join(client, "goal", "a", "b", "c")
    await sync(client, "a", *daily(1, [12000] * 10))  # every day met: 10 of 10
    await sync(client, "b", *daily(1, [10000, 3000] * 5))  # 5 of 10
    await sync(client, "c", *daily(1, [9999] * 10))  # none
    data = await get_analytics(client, "goal")
    assert data["format"] == "goal"
    leaders = by_user(data["leaders"])
    assert [(u, s["score"]) for u, s in leaders.items()] == [("a", 10), ("b", 5), ("c", 0)]
    # Each remaining day met with the posterior chance (met + 1) / (days + 2).
    assert leaders["a"]["projected_score"] == round(10 + 20 * 11 / 12)
    assert leaders["b"]["projected_score"] == round(5 + 20 * 6 / 12)
    assert leaders["c"]["projected_score"] == round(0 + 20 * 1 / 12)
    for s in leaders.values():
        low, high = s["projected_range"]
        assert s["score"] <= low <= high <= s["score"] + 20
    assert leaders["a"]["chance_to_win"] > 0.99
    assert sum(chances(data).values()) == pytest.approx(1.0, abs=1e-9)
    # The field of a goal competition is the metric's values.
    first = data["days"][0]
    assert (first["date"], first["active_participants"], first["total"], first["median"]) == (
        "2026-11-01", 3, 12000 + 10000 + 9999, 10000,
    )  # fmt: skip


# --- the cache follows the board -------------------------------------------------------


async def test_a_sync_between_two_reads_is_in_the_second(client: httpx.AsyncClient) -> None:
    await create_comp(client, "fresh")
    await join(client, "fresh", "a", "b")
    await sync(client, "a", rec("2026-11-09", 4000))
    await sync(client, "b", rec("2026-11-09", 5000))
    before = await get_analytics(client, "fresh", "a")
    assert [s["user_id"] for s in before["leaders"]] == ["b", "a"]
    await sync(client, "a", rec("2026-11-10", 3000))
    after = await get_analytics(client, "fresh", "a")
    assert after["event_id"] > before["event_id"]
    assert [(s["user_id"], s["score"]) for s in after["leaders"]] == [("a", 7000), ("b", 5000)]
    assert after["me"]["rank"] == 1 and before["me"]["rank"] == 2
    assert after["distribution"]["max"] == 7000 and before["distribution"]["max"] == 5000
    assert after["days"][-1] == {
        "date": "2026-11-10", "participants": 2, "active_participants": 1, "joined": 2,
        "left": 0, "total": 3000, "median": 3000,
    }  # fmt: skip
    # The board's version is the leaderboard's.
    resp = await client.get(f"{API}/leaderboard/fresh", headers=auth("a"))
    assert resp.json()["data"]["event_id"] == after["event_id"]


async def test_a_disqualified_participants_sync_is_in_the_next_read(
    client: httpx.AsyncClient,
) -> None:
    """A disqualified participant still syncs (kept, counted, off the board): the
    organizer's next read shows it (SPEC §6.2: a read reflects every acknowledged write;
    caches are validated, never merely aged)."""
    await create_comp(client, "dqc")
    await join(client, "dqc", "a", "b")
    await sync(client, "a", rec("2026-11-05", 500))
    await disqualify(client, "dqc", "a", "shared account")
    data = await get_analytics(client, "dqc")
    assert data["disqualified"] == [{"user_id": "a", "user_name": "a", "score": 500}]
    answer = await sync(client, "a", rec("2026-11-06", 700))
    assert answer["competitions"][0]["score"] == 1200
    data = await get_analytics(client, "dqc")
    assert [(d["user_id"], d["score"]) for d in data["disqualified"]] == [("a", 1200)]


async def test_a_disqualified_participants_rejoin_is_in_the_next_read(
    client: httpx.AsyncClient,
) -> None:
    await create_comp(client, "dqr")
    await join(client, "dqr", "a", "b")
    await sync(client, "a", rec("2026-11-05", 500))
    await disqualify(client, "dqr", "a", "shared account")
    resp = await client.post(f"{API}/competitions/dqr/leave", headers=auth("a"))
    assert resp.status_code == 200, resp.text
    data = await get_analytics(client, "dqr")
    assert data["disqualified"] == [] and data["days"][-1]["left"] == 1
    await join(client, "dqr", "a")  # still disqualified: not in the field
    data = await get_analytics(client, "dqr")
    assert [(d["user_id"], d["score"]) for d in data["disqualified"]] == [("a", 500)]
    assert data["days"][-1]["joined"] == 3 and data["days"][-1]["participants"] == 1


async def test_no_day_has_more_active_participants_than_participants(
    client: httpx.AsyncClient,
) -> None:
    """Joining late and syncing the window's earlier days (which count) makes those days
    active for the late joiner: they are participants of those days too."""
    await create_comp(client, "late")  # 2026-11-01 .. 30; today 2026-11-10
    await join(client, "late", "a", "b", "c")
    await sync(client, "a", *daily(1, [5000] * 10))
    await sync(client, "b", *daily(3, [4000] * 8))
    data = await get_analytics(client, "late")
    for day in data["days"]:
        assert day["active_participants"] <= day["participants"], day


# --- the projected finish in the stats ---------------------------------------------------


async def test_stats_carry_the_projected_finish_but_not_for_the_disqualified(
    client: httpx.AsyncClient,
) -> None:
    await create_comp(client, "proj")
    await join(client, "proj", "a", "b", "c")
    await sync(client, "a", *daily(1, [9000, 11000] * 5))
    await sync(client, "b", *daily(1, [6000, 4000] * 5))
    await sync(client, "c", *daily(1, [1000, 3000] * 5))
    board = await get_analytics(client, "proj")
    for user, rank in (("a", 1), ("b", 2), ("c", 3)):
        comp = (await stats(client, user, competition_id="proj"))["competition"]
        assert comp["rank"] == rank and comp["disqualified"] is False
        assert comp["projected_final_score"] == by_user(board["leaders"])[user]["projected_score"]
        assert comp["projected_final_rank"] == rank
    await disqualify(client, "proj", "b", "shared account")
    comp = (await stats(client, "b", competition_id="proj"))["competition"]
    assert comp["score"] == 50000 and comp["disqualified"] is True
    assert (comp["rank"], comp["projected_final_score"], comp["projected_final_rank"]) == (
        None, None, None,
    )  # fmt: skip
    comp = (await stats(client, "c", competition_id="proj"))["competition"]
    assert (comp["rank"], comp["projected_final_rank"]) == (2, 2)
    data = await get_analytics(client, "proj")
    assert [s["user_id"] for s in data["leaders"]] == ["a", "c"]
    assert [(d["user_id"], d["score"]) for d in data["disqualified"]] == [("b", 50000)]
    assert (await get_analytics(client, "proj", "b"))["me"] is None


# --- access and refusals ---------------------------------------------------------------


async def test_who_may_see_the_analytics(client: httpx.AsyncClient) -> None:
    await create_comp(client, "priv")
    await create_comp(client, "pub", visibility="public")
    await join(client, "priv", "a")
    await join(client, "pub", "a")
    await sync(client, "a", rec("2026-11-05", 1234))
    url = f"{API}/fitness/analytics"
    assert_error(await client.get(f"{url}/priv"), 401)
    assert_error(await client.get(f"{url}/priv", headers=auth("stranger")), 404,
                 "competition_not_found")  # fmt: skip
    assert_error(await client.get(f"{url}/pub", headers=auth("stranger")), 403, "not_participant")
    summary = await get_analytics(client, "priv", "a")
    assert summary["view"] == "summary" and summary.get("flags") is None
    assert summary["me"]["score"] == 1234
    for who in ("org", "service"):
        full = await get_analytics(client, "priv", who)
        assert full["view"] == "full" and isinstance(full["flags"], dict)
        assert full["disqualified"] == []
    assert (await get_analytics(client, "pub", "a"))["view"] == "summary"
    assert_error(await client.get(f"{url}/nope", headers=auth("a")), 404, "competition_not_found")
    assert_error(await client.get(f"{url}/nope", headers=SERVICE_AUTH), 404,
                 "competition_not_found")  # fmt: skip
    assert_error(await client.get(f"{url}/bad:id", headers=auth("a")), 422, "validation_error")
    assert_error(await client.get(f"{url}/{'x' * 65}", headers=auth("a")), 422)
    for limit in ("0", "101", "-1", "ten"):
        resp = await client.get(f"{url}/priv", params={"limit": limit}, headers=auth("a"))
        assert "limit" in {d.get("field") for d in assert_error(resp, 422)["details"]}, limit
    assert len((await get_analytics(client, "priv", "a", limit=100))["leaders"]) == 1
