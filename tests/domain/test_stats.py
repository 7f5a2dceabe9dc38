"""Stats (SPEC §6.4), history and the user's competitions; who may see them."""

from __future__ import annotations

from datetime import date, timedelta

import httpx
import pytest

from healthcomp.core.clock import FixedClock
from tests.conftest import SERVICE_AUTH, assert_error, auth
from tests.domain.helpers import API, create_comp, history, join, rec, stats, sync

# Today is 2026-11-10 (UTC) in every test here.
STEPS = {
    "2026-10-05": 12000,
    "2026-10-20": 3000,
    "2026-10-25": 0,
    "2026-11-01": 10000,
    "2026-11-02": 11000,
    "2026-11-03": 10500,
    "2026-11-04": 2000,
    "2026-11-06": 10000,
    "2026-11-07": 10000,
    "2026-11-08": 15000,
    "2026-11-09": 10001,
    "2026-11-10": 2500,
}
DISTANCE = {"2026-11-02": 9000, "2026-10-20": 2500, "2026-11-09": 7000}
MINUTES = {"2026-11-08": 90}


def _sum(values: dict[str, int], first: str, last: str) -> int:
    return sum(v for d, v in values.items() if first <= d <= last)


async def _seed(client: httpx.AsyncClient) -> None:
    await create_comp(client, "c")  # 2026-11-01 .. 2026-11-30
    await create_comp(client, "w", start_date="2026-11-06", end_date="2026-11-12")
    await join(client, "c", "a", "b", "x")
    await join(client, "w", "a")
    records = [
        rec(d, s, distance=DISTANCE.get(d, 0), active_minutes=MINUTES.get(d, 0))
        for d, s in STEPS.items()
    ]
    # A second source that is lower on steps and higher on calories.
    records.append(rec("2026-11-08", 9000, source="watch", calories=600))
    await sync(client, "a", *records)
    await sync(client, "b", rec("2026-11-05", 50000), rec("2026-11-06", 20000))
    await sync(client, "x", rec("2026-11-05", 500))


async def test_user_stats(client: httpx.AsyncClient) -> None:
    await _seed(client)
    s = await stats(client, "a")
    total_steps = sum(STEPS.values())
    assert s["user_id"] == "a"
    assert s["totals"] == {
        "steps": total_steps,
        "distance": sum(DISTANCE.values()),
        "calories": 600,
        "active_minutes": 90,
    }
    assert s["active_days"] == 11 and s["days_recorded"] == 12
    assert s["daily_averages"]["steps"] == pytest.approx(round(total_steps / 11, 2))
    assert s["daily_averages"]["distance"] == pytest.approx(round(sum(DISTANCE.values()) / 11, 2))
    assert s["best_day"]["steps"] == {"date": "2026-11-08", "value": 15000}
    assert s["best_day"]["distance"] == {"date": "2026-11-02", "value": 9000}
    assert s["best_day"]["calories"] == {"date": "2026-11-08", "value": 600}
    assert s["step_goal"] == 10000
    # 11-06..11-09 met the goal; today (2500) is not over yet, so the streak is alive.
    assert (s["current_streak"], s["longest_streak"]) == (4, 4)
    assert s["last_7_days"]["steps"] == _sum(STEPS, "2026-11-04", "2026-11-10")
    assert s["last_30_days"]["steps"] == _sum(STEPS, "2026-10-12", "2026-11-10")
    assert s["last_7_days"]["distance"] == 7000
    assert s["last_30_days"]["distance"] == 2500 + 9000 + 7000 - 0

    score_c = _sum(STEPS, "2026-11-01", "2026-11-30")
    score_w = _sum(STEPS, "2026-11-06", "2026-11-12")
    comps = {c["competition_id"]: c for c in s["competitions"]}
    assert set(comps) == {"c", "w"}
    assert (comps["c"]["score"], comps["c"]["rank"]) == (score_c, 1)
    assert comps["c"]["gap_to_next_rank"] is None
    assert (comps["w"]["score"], comps["w"]["rank"], comps["w"]["gap_to_next_rank"]) == (
        score_w,
        1,
        None,
    )
    sb = await stats(client, "b")
    cb = sb["competitions"][0]
    assert (cb["score"], cb["rank"], cb["gap_to_next_rank"]) == (70000, 2, score_c - 70000)
    sx = await stats(client, "x")
    cx = sx["competitions"][0]
    assert (cx["rank"], cx["gap_to_next_rank"]) == (3, 70000 - 500)


async def test_gap_to_next_rank(client: httpx.AsyncClient) -> None:
    await create_comp(client, "c")
    await join(client, "c", "a", "b", "c", "d")
    await sync(client, "a", rec("2026-11-03", 9000))
    await sync(client, "b", rec("2026-11-03", 5000))
    await sync(client, "c", rec("2026-11-03", 5000))
    await sync(client, "d", rec("2026-11-03", 1200))
    got = {}
    for user in "abcd":
        comp = (await stats(client, user))["competitions"][0]
        got[user] = (comp["rank"], comp["gap_to_next_rank"])
    assert got == {"a": (1, None), "b": (2, 4000), "c": (2, 4000), "d": (4, 3800)}


@pytest.mark.parametrize(
    ("goal", "current", "longest"),
    [(11000, 0, 1), (2000, 5, 5), (10001, 2, 2), (10000, 4, 4), (100000, 0, 0)],
)
async def test_streak_goal(
    client: httpx.AsyncClient, goal: int, current: int, longest: int
) -> None:
    await sync(client, "a", *(rec(d, s) for d, s in STEPS.items()))
    s = await stats(client, "a", step_goal=goal)
    assert s["step_goal"] == goal
    assert (s["current_streak"], s["longest_streak"]) == (current, longest)


async def test_streak_alive_today_and_broken(client: httpx.AsyncClient, clock: FixedClock) -> None:
    await sync(client, "a", rec("2026-11-08", 10000), rec("2026-11-09", 10000))
    await sync(client, "a", rec("2026-11-10", 10000))
    s = await stats(client, "a")
    assert (s["current_streak"], s["longest_streak"]) == (3, 3)
    clock.advance(days=2)  # 11-11 missed entirely: the streak is over
    s = await stats(client, "a")
    assert (s["current_streak"], s["longest_streak"]) == (0, 3)


async def test_step_goal_bounds(client: httpx.AsyncClient) -> None:
    await sync(client, "a", rec("2026-11-08", 10))
    for goal in (0, -1, 100001):
        resp = await client.get(
            f"{API}/fitness/stats/a", params={"step_goal": goal}, headers=auth("a")
        )
        assert_error(resp, 422)


async def test_stats_in_a_competition(client: httpx.AsyncClient) -> None:
    await _seed(client)
    s = await stats(client, "a", competition_id="c")
    window = {d: v for d, v in STEPS.items() if "2026-11-01" <= d <= "2026-11-30"}
    score = sum(window.values())
    assert s["totals"]["steps"] == score
    assert s["totals"]["distance"] == 9000 + 7000
    assert s["active_days"] == len(window)
    assert s["best_day"]["steps"] == {"date": "2026-11-08", "value": 15000}
    assert s["longest_streak"] == 4 and s["current_streak"] == 4
    comp = s["competition"]
    assert comp["competition_id"] == "c" and comp["metric"] == "steps"
    assert comp["score"] == score and comp["rank"] == 1
    assert comp["participant_count"] == 3
    # 10 of 30 days elapsed: the pace so far, three times over.
    assert comp["projected_final_score"] == score * 3

    s = await stats(client, "a", competition_id="w")
    week = {d: v for d, v in STEPS.items() if "2026-11-06" <= d <= "2026-11-12"}
    assert s["totals"]["steps"] == sum(week.values())
    assert s["competition"]["score"] == sum(week.values())
    # 5 of 7 days elapsed.
    assert s["competition"]["projected_final_score"] == round(sum(week.values()) * 7 / 5)

    sx = await stats(client, "x", "a", competition_id="c")  # a looks at co-participant x
    assert sx["totals"]["steps"] == 500 and sx["competition"]["rank"] == 3


async def test_projection_before_start_and_after_end(
    client: httpx.AsyncClient, clock: FixedClock
) -> None:
    await create_comp(client, "c", start_date="2026-11-09", end_date="2026-11-12")
    await join(client, "c", "a")
    await sync(client, "a", rec("2026-11-09", 1000), rec("2026-11-10", 3000))
    s = await stats(client, "a", competition_id="c")
    assert s["competition"]["projected_final_score"] == 4000 * 4 // 2
    clock.advance(days=3)
    s = await stats(client, "a", competition_id="c")
    assert s["competition"]["projected_final_score"] == 4000


async def test_stats_access(client: httpx.AsyncClient) -> None:
    await _seed(client)
    await sync(client, "loner", rec("2026-11-05", 10))
    url = f"{API}/fitness/stats/a"
    assert (await client.get(url, headers=auth("a"))).status_code == 200
    assert (await client.get(url, headers=SERVICE_AUTH)).status_code == 200
    assert_error(await client.get(url, headers=auth("b")), 403)
    assert_error(await client.get(url, headers=auth("loner")), 403)
    assert_error(await client.get(url), 401)
    # Naming a competition both take part in opens the door, only to that competition.
    resp = await client.get(url, params={"competition_id": "c"}, headers=auth("b"))
    assert resp.status_code == 200, resp.text
    assert resp.json()["data"]["totals"]["steps"] == _sum(STEPS, "2026-11-01", "2026-11-30")
    assert_error(await client.get(url, params={"competition_id": "w"}, headers=auth("b")), 404)
    assert_error(await client.get(url, params={"competition_id": "c"}, headers=auth("loner")), 404)
    resp = await client.get(url, params={"competition_id": "c"}, headers=auth("org"))
    assert resp.status_code == 200, resp.text
    resp = await client.get(url, params={"competition_id": "w"}, headers=SERVICE_AUTH)
    assert resp.status_code == 200, resp.text
    # Unknown: 404, not zeros.
    assert_error(await client.get(f"{API}/fitness/stats/ghost", headers=SERVICE_AUTH), 404)
    assert_error(
        await client.get(url, params={"competition_id": "nope"}, headers=auth("a")),
        404,
        "competition_not_found",
    )
    assert_error(
        await client.get(url, params={"competition_id": "nope"}, headers=SERVICE_AUTH), 404
    )
    # The user exists but is not in that competition.
    assert_error(
        await client.get(
            f"{API}/fitness/stats/loner", params={"competition_id": "c"}, headers=auth("loner")
        ),
        404,
    )
    assert_error(await client.get(url, params={"competition_id": "a b"}, headers=auth("a")), 422)
    assert_error(await client.get(f"{API}/fitness/stats/a%20b", headers=SERVICE_AUTH), 422)


async def test_history(client: httpx.AsyncClient) -> None:
    await _seed(client)
    days = await history(client, "a", "2026-11-02", "2026-11-08")
    assert [d["date"] for d in days] == [
        "2026-11-02",
        "2026-11-03",
        "2026-11-04",
        "2026-11-06",
        "2026-11-07",
        "2026-11-08",
    ]
    d8 = days[-1]
    assert (d8["steps"], d8["calories"], d8["active_minutes"]) == (15000, 600, 90)
    assert d8["sources"]["phone"]["steps"] == 15000 and d8["sources"]["phone"]["calories"] == 0
    assert d8["sources"]["watch"]["steps"] == 9000 and d8["sources"]["watch"]["calories"] == 600
    assert d8["sources"]["watch"]["synced_at"] == "2026-11-10T12:00:00.000Z"
    assert days[0]["distance"] == 9000 and set(days[0]["sources"]) == {"phone"}

    resp = await client.get(f"{API}/fitness/history/a", headers=auth("a"))
    data = resp.json()["data"]
    assert (data["from"], data["to"]) == ("2026-10-12", "2026-11-10")
    assert data["days"][0]["date"] == "2026-10-20"

    one_year = (date(2026, 11, 10) - timedelta(days=365)).isoformat()
    assert len(await history(client, "a", one_year, "2026-11-10")) == 12
    too_long = (date(2026, 11, 10) - timedelta(days=366)).isoformat()
    url = f"{API}/fitness/history/a"
    for params in (
        {"from": "2026-11-08", "to": "2026-11-02"},
        {"from": too_long, "to": "2026-11-10"},
        {"from": "2026-13-01"},
    ):
        assert_error(await client.get(url, params=params, headers=auth("a")), 422)
    # Same access rules as stats.
    assert_error(await client.get(url, headers=auth("b")), 403)
    assert (await client.get(url, headers=SERVICE_AUTH)).status_code == 200
    resp = await client.get(url, params={"competition_id": "c"}, headers=auth("b"))
    assert resp.status_code == 200, resp.text
    assert_error(await client.get(url, params={"competition_id": "w"}, headers=auth("b")), 404)
    assert_error(await client.get(f"{API}/fitness/history/ghost", headers=SERVICE_AUTH), 404)


async def test_user_competitions(client: httpx.AsyncClient) -> None:
    await _seed(client)
    resp = await client.get(f"{API}/users/a/competitions", headers=auth("a"))
    assert resp.status_code == 200, resp.text
    comps = {c["competition_id"]: c for c in resp.json()["data"]["competitions"]}
    assert set(comps) == {"c", "w"}
    assert comps["w"]["score"] == _sum(STEPS, "2026-11-06", "2026-11-12")
    assert comps["c"]["status"] == "active" and comps["c"]["participant_count"] == 3
    resp = await client.get(f"{API}/users/x/competitions", headers=SERVICE_AUTH)
    assert [c["competition_id"] for c in resp.json()["data"]["competitions"]] == ["c"]
    assert_error(await client.get(f"{API}/users/a/competitions", headers=auth("b")), 403)
    assert_error(await client.get(f"{API}/users/a/competitions"), 401)


async def test_history_for_co_participant_stays_in_window(client: httpx.AsyncClient) -> None:
    await _seed(client)
    resp = await client.get(
        f"{API}/fitness/history/a",
        params={"competition_id": "c", "from": "2026-10-01", "to": "2026-11-10"},
        headers=auth("b"),
    )
    assert resp.status_code == 200, resp.text
    dates = [d["date"] for d in resp.json()["data"]["days"]]
    assert dates and all("2026-11-01" <= d <= "2026-11-30" for d in dates), dates


async def test_history_days_must_be_calendar_days(client: httpx.AsyncClient) -> None:
    await client.get("/api/v1/users/me", headers=auth("a"))
    for query in ("to=0", "from=20261101", "to=2026-11-10T00:00:00Z", "from=2026-02-30"):
        resp = await client.get(f"/api/v1/fitness/history/a?{query}", headers=auth("a"))
        field = query.split("=")[0]
        assert field in {d["field"] for d in assert_error(resp, 422)["details"]}, query
