"""The board engine (issue #6): joins racing first syncs, joins interrupted after the
join step, the apply step's re-checks, and the rules whose loss the rest of the suite
would not notice (each test here fails if its rule is removed from the engine)."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta
from typing import Any

import httpx
import pytest

from healthcomp.core.clock import FixedClock, from_ms, to_ms
from healthcomp.core.context import AppContext
from healthcomp.engine import reads, sweep, writes
from healthcomp.engine.codes import Reply
from healthcomp.engine.model import Event, Push
from healthcomp.engine.rules import deadline
from tests.conftest import SERVICE_AUTH, assert_error, auth
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
    sync,
)


async def _events(ctx: AppContext, cid: str) -> list[Event]:
    out: list[Event] = []
    while True:
        page = await reads.events_since(ctx, cid, out[-1].event_id if out else 0, count=100)
        out.extend(page)
        if len(page) < 100:
            return out


def _replayed(events: list[Event]) -> list[tuple[str, int, int]]:
    """(user, rank, score) in board order, rebuilt from the events alone."""
    assert [e.event_id for e in events] == list(range(1, len(events) + 1))
    score: dict[str, int] = {}
    reached: dict[str, int] = {}
    for ev in events:
        d = ev.data
        user = str(d.get("user_id"))
        if d["type"] == "join":
            score[user], reached[user] = d["score"], ev.event_id
        elif d["type"] in ("sync", "write", "recount"):
            assert d["previous_score"] == score[user]
            if d["score"] != score[user]:
                score[user], reached[user] = d["score"], ev.event_id
        elif d["type"] == "leave":
            del score[user], reached[user]
    order = sorted(score, key=lambda u: (-score[u], reached[u], u))
    return [(u, 1 + sum(1 for s in score.values() if s > score[u]), score[u]) for u in order]


async def _owed(ctx: AppContext, user: str) -> dict[str, str]:
    raw: dict[str, str] = await ctx.r.hgetall(ctx.keys.owed(user))
    return raw


# --- joins racing first syncs ----------------------------------------------------------


@pytest.mark.parametrize("round_", range(3))
async def test_joins_racing_first_syncs_count_every_day(
    client: httpx.AsyncClient, ctx: AppContext, round_: int
) -> None:
    """Each user joins while their first syncs are in flight, all users at once: a sync
    that chose its competitions before the join and a back-fill that ran before the
    sync must between them count every day."""
    cid = f"race{round_}"
    await create_comp(client, cid)
    users = [f"{cid}-u{i}" for i in range(24)]
    days = ["2026-11-02", "2026-11-03", "2026-11-05", "2026-11-09"]
    expected: dict[str, int] = {}
    calls: list[Any] = []
    for i, user in enumerate(users):
        records = [
            rec(day, 100 * (i + 1) + 7 * j + 13 * s, source=("phone", "watch")[s])
            for j, day in enumerate(days)
            for s in range(2)
        ]
        expected[user] = sum(max(r["steps"] for r in records if r["date"] == d) for d in days)
        # The join placed among its user's syncs, a different place for each user.
        mine: list[Any] = [sync(client, user, r) for r in records]
        mine.insert((i + round_) % (len(mine) + 1), join(client, cid, user))
        calls.extend(mine)
    order = list(range(len(calls)))
    # Interleave the users' calls, deterministically.
    order.sort(key=lambda n: (n * 7919 + round_) % len(calls))
    answers = await asyncio.gather(*(calls[n] for n in order))
    # Some syncs ran before their user's join had recorded the window (they answered
    # without the competition): the back-fill must have counted their days.
    reached = Counter(bool(a["competitions"]) for a in answers if a is not None)
    assert reached[False] > 0

    got = await standings(client, cid)
    want = sorted(expected.items(), key=lambda kv: -kv[1])
    assert {u: s for u, _, s in got} == expected
    assert [s for _, _, s in got] == [s for _, s in want]
    # Nothing left owed, every user's record of windows names the competition, and the
    # events rebuild the board.
    for user in users:
        assert await _owed(ctx, user) == {}
        assert cid in await reads.competitions_of(ctx, user)
    assert _replayed(await _events(ctx, cid)) == got


# --- a join whose request dies after the join step ---------------------------------------


async def _join_step_only(ctx: AppContext, cid: str, user: str, now_ms: int) -> None:
    """What `writes.join` does before a request dies: the owed back-fill is recorded,
    the join script runs, the back-fill never does."""
    res = await writes.join_step(ctx, cid, user, user, now_ms)
    assert Reply(int(res[0])) is Reply.OK


async def _dead_join(
    client: httpx.AsyncClient, ctx: AppContext, clock: FixedClock, cid: str
) -> None:
    await create_comp(client, cid)
    await join(client, cid, "b")
    await sync(client, "b", rec("2026-11-04", 2500))
    # Synced before joining: stored only.
    await sync(client, "a", rec("2026-11-02", 3000), rec("2026-11-05", 2000, source="watch"))
    await _join_step_only(ctx, cid, "a", to_ms(clock.now()))
    assert await standings(client, cid) == [("b", 1, 2500), ("a", 2, 0)]
    assert set(await _owed(ctx, "a")) == {f"{cid}|*"}
    # A sync meanwhile: the user's record does not name the competition yet.
    clock.advance(seconds=5)
    data = await sync(client, "a", rec("2026-11-06", 1000))
    assert data["competitions"] == []


async def test_a_retried_join_completes_the_back_fill(
    client: httpx.AsyncClient, ctx: AppContext, clock: FixedClock
) -> None:
    await _dead_join(client, ctx, clock, "c")
    resp = await client.post(f"{API}/competitions/c/join", headers=auth("a"))
    assert_error(resp, 409, "already_joined")
    assert await standings(client, "c") == [("a", 1, 6000), ("b", 2, 2500)]
    assert await _owed(ctx, "a") == {}
    assert await reads.competitions_of(ctx, "a") == ["c"]
    # From now on a sync reaches the competition directly.
    data = await sync(client, "a", rec("2026-11-07", 400))
    assert data["competitions"] == [
        {"competition_id": "c", "score": 6400, "rank": 1, "previous_rank": 1}
    ]
    assert _replayed(await _events(ctx, "c")) == await standings(client, "c")


async def test_the_sweep_completes_a_dead_join(
    client: httpx.AsyncClient, ctx: AppContext, clock: FixedClock
) -> None:
    await _dead_join(client, ctx, clock, "c")
    # A back-fill owed for less than the grace may belong to a join still in flight.
    await sweep.run_once(ctx)
    assert await standings(client, "c") == [("b", 1, 2500), ("a", 2, 0)]
    assert set(await _owed(ctx, "a")) == {"c|*"}
    await sweep.run_once(ctx, join_grace_ms=0)
    assert await standings(client, "c") == [("a", 1, 6000), ("b", 2, 2500)]
    assert await _owed(ctx, "a") == {}
    assert await reads.competitions_of(ctx, "a") == ["c"]
    # Idempotent: another sweep changes nothing.
    version = len(await _events(ctx, "c"))
    await sweep.run_once(ctx, join_grace_ms=0)
    assert len(await _events(ctx, "c")) == version
    assert _replayed(await _events(ctx, "c")) == await standings(client, "c")


async def test_the_sweep_waits_out_the_join_grace(
    client: httpx.AsyncClient, ctx: AppContext, clock: FixedClock
) -> None:
    await _dead_join(client, ctx, clock, "c")
    clock.advance(milliseconds=sweep.JOIN_GRACE_MS)
    await sweep.run_once(ctx)
    assert await standings(client, "c") == [("a", 1, 6000), ("b", 2, 2500)]


# --- the apply step re-checks what the user's side chose -------------------------------


async def test_a_stored_sync_repaired_after_a_cancel_changes_nothing(
    client: httpx.AsyncClient, ctx: AppContext, clock: FixedClock
) -> None:
    await create_comp(client, "c")
    await join(client, "c", "a")
    now_ms = to_ms(clock.now())
    code, pushes = await writes.store(ctx, "a", now_ms, [("2026-11-05", "phone", (4000, 0, 0, 0))])
    assert code is Reply.OK and isinstance(pushes, list)
    assert [(p.competition_id, p.day) for p in pushes] == [("c", "2026-11-05")]
    resp = await client.post(f"{API}/competitions/c/cancel", headers=auth("org"))
    assert resp.status_code == 200, resp.text
    before = await _events(ctx, "c")
    assert before[-1].data["type"] == "cancelled"

    assert await writes.repair(ctx, "a", now_ms) == 1
    assert await standings(client, "c") == [("a", 1, 0)]
    assert await _events(ctx, "c") == before
    # The marks are done with; later syncs add nothing either.
    assert await _owed(ctx, "a") == {}
    data = await sync(client, "a", rec("2026-11-05", 6000))
    assert await standings(client, "c") == [("a", 1, 0)]
    assert await _events(ctx, "c") == before
    assert data["competitions"] == []


async def test_marks_stored_in_time_count_after_the_deadline(
    client: httpx.AsyncClient, ctx: AppContext, clock: FixedClock
) -> None:
    await create_comp(client, "c", start_date="2026-11-01", end_date="2026-11-10")
    await join(client, "c", "a", "b")
    closes = deadline(at(2026, 11, 10).date(), 24)
    assert closes == at(2026, 11, 12, 12)
    now_ms = to_ms(clock.now())
    await writes.store(ctx, "a", now_ms, [("2026-11-09", "phone", (4000, 0, 0, 0))])
    clock.at = closes + timedelta(hours=1)
    later_ms = to_ms(clock.now())
    # Stored before the deadline, repaired after it: counted.
    assert await writes.repair(ctx, "a", later_ms) == 1
    assert await standings(client, "c") == [("a", 1, 4000), ("b", 2, 0)]

    # A push of a day stored after the deadline is refused, however it arrives ...
    late = Push("c", "2026-11-09", 1, 1, (9000, 0, 0, 0), to_ms(closes) + 1)
    applied = (await writes.push(ctx, "b", [late], later_ms))["c"]
    assert not applied.changed and applied.score == 0
    assert await standings(client, "c") == [("a", 1, 4000), ("b", 2, 0)]
    # ... and one stored at the deadline itself still counts.
    on_time = Push("c", "2026-11-09", 1, 1, (9000, 0, 0, 0), to_ms(closes))
    applied = (await writes.push(ctx, "b", [on_time], later_ms))["c"]
    assert applied.changed and applied.score == 9000
    assert await standings(client, "c") == [("b", 1, 9000), ("a", 2, 4000)]


async def test_a_window_edit_counts_the_new_window_only(
    client: httpx.AsyncClient, ctx: AppContext, clock: FixedClock
) -> None:
    """Days stored (a), or counted (b), under the old window: after the edit, neither the
    recount nor a repair of the old marks counts a day the new window leaves out."""
    await create_comp(client, "c", start_date="2026-11-12", end_date="2026-11-20")
    await join(client, "c", "a", "b")
    now_ms = to_ms(clock.now())
    # The engine's own steps (the API refuses days that have not begun yet).
    records = [
        ("2026-11-12", "phone", (5000, 0, 0, 0)),
        ("2026-11-15", "phone", (700, 0, 0, 0)),
    ]
    _, pushes = await writes.store(ctx, "a", now_ms, records)
    assert isinstance(pushes, list) and {p.day for p in pushes} == {"2026-11-12", "2026-11-15"}
    await writes.sync(ctx, "b", now_ms, [(d, s, (v[0] + 1, *v[1:])) for d, s, v in records])
    assert await standings(client, "c") == [("b", 1, 5702), ("a", 2, 0)]
    resp = await client.patch(
        f"{API}/competitions/c", json={"start_date": "2026-11-14"}, headers=auth("org")
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["data"]["recount"] == {"state": "done", "done": 2, "total": 2}
    assert await standings(client, "c") == [("b", 1, 701), ("a", 2, 700)]
    # a's marks still name 11-12, which the competition no longer counts.
    assert await writes.repair(ctx, "a", now_ms) == 2
    assert await standings(client, "c") == [("b", 1, 701), ("a", 2, 700)]
    assert await _owed(ctx, "a") == {}
    # A hand-made push of a day outside the window: refused too.
    outside = Push("c", "2026-11-21", 1, 1, (900, 0, 0, 0), now_ms)
    assert not (await writes.push(ctx, "a", [outside], now_ms))["c"].changed
    assert await standings(client, "c") == [("b", 1, 701), ("a", 2, 700)]
    assert _replayed(await _events(ctx, "c")) == await standings(client, "c")


# --- a day's version follows every metric ------------------------------------------------


async def test_a_correction_of_one_metric_reaches_that_metrics_board(
    client: httpx.AsyncClient, ctx: AppContext
) -> None:
    await create_comp(client, "dist", metric="distance")
    await create_comp(client, "mins", metric="active_minutes")
    await create_comp(client, "kcal", metric="calories")
    for cid in ("dist", "mins", "kcal"):
        await join(client, cid, "a")
    day: dict[str, Any] = {"distance": 400, "calories": 300, "active_minutes": 30}
    await sync(client, "a", rec("2026-11-05", 1000, **day))
    assert await standings(client, "dist") == [("a", 1, 400)]
    for metric, value, cid in (
        ("distance", 1200, "dist"),
        ("active_minutes", 45, "mins"),
        ("calories", 250, "kcal"),  # a lower value corrects too
    ):
        day[metric] = value
        data = await sync(client, "a", rec("2026-11-05", 1000, **day))
        scores = {c["competition_id"]: c["score"] for c in data["competitions"]}
        assert scores[cid] == value
        assert await standings(client, cid) == [("a", 1, value)]
    eff = (await reads.effective_days(ctx, "a"))["2026-11-05"]
    assert eff["v"] == [1000, 1200, 250, 45] and eff["ver"] == 4
    # The steps alone unchanged: the same data again changes no version.
    await sync(client, "a", rec("2026-11-05", 1000, **day))
    assert (await reads.effective_days(ctx, "a"))["2026-11-05"]["ver"] == 4


# --- adjustments belong to the participation ----------------------------------------


async def test_adjustments_survive_leave_and_rejoin(
    client: httpx.AsyncClient, ctx: AppContext, clock: FixedClock
) -> None:
    await create_comp(client, "c")
    await join(client, "c", "a", "b")
    await sync(client, "a", rec("2026-11-05", 1000))
    body = {"user_id": "a", "competition_id": "c", "steps": 5000, "reason": "lost data"}
    resp = await client.post(f"{API}/leaderboard/update", json=body, headers=SERVICE_AUTH)
    assert resp.status_code == 200, resp.text
    assert resp.json()["data"]["entry"]["score"] == 5000

    joined_ms = to_ms(clock.now())
    clock.advance(minutes=1)
    resp = await client.post(f"{API}/competitions/c/leave", headers=auth("a"))
    assert resp.status_code == 200, resp.text
    assert await standings(client, "c") == [("b", 1, 0)]
    assert await ctx.r.hget(ctx.keys.adjustments("c"), "a") is not None
    part = await reads.participation(ctx, "c", "a")
    assert part is not None
    assert part["state"] == "left" and part["joins"] == 1
    assert part["joined_at"] == joined_ms and part["left_at"] == to_ms(clock.now())

    await sync(client, "a", rec("2026-11-06", 500))  # not a participant: stored only
    clock.advance(minutes=1)
    await join(client, "c", "a")
    # The offset of the write (+4000) over the activity, now 1500.
    assert await standings(client, "c") == [("a", 1, 5500), ("b", 2, 0)]
    part = await reads.participation(ctx, "c", "a")
    assert part is not None and part["state"] == "active" and part["joins"] == 2
    resp = await client.get(f"{API}/competitions/c/audit", headers=auth("org"))
    assert resp.status_code == 200, resp.text
    records = resp.json()["data"]["records"]
    assert [(r["action"], r["user_id"], r["score_after"]) for r in records] == [
        ("set_totals", "a", 5000)
    ]


# --- clearing a mark honours its sequence number ----------------------------------------


async def test_a_newer_mark_survives_the_clear_of_an_older_one(
    client: httpx.AsyncClient, ctx: AppContext, clock: FixedClock
) -> None:
    await create_comp(client, "c")
    await join(client, "c", "a")
    now_ms = to_ms(clock.now())
    _, first = await writes.store(ctx, "a", now_ms, [("2026-11-05", "phone", (1000, 0, 0, 0))])
    # A second sync of the same day stored before the first one's push finished.
    _, second = await writes.store(ctx, "a", now_ms, [("2026-11-05", "phone", (3000, 0, 0, 0))])
    assert isinstance(first, list) and isinstance(second, list)
    assert [(p.seq, p.values[0]) for p in first] == [(1, 1000)]
    assert [(p.seq, p.values[0]) for p in second] == [(2, 3000)]
    # The first push lands and clears its mark: seq 1, which is no longer there.
    await writes.push(ctx, "a", first, now_ms)
    assert await standings(client, "c") == [("a", 1, 1000)]
    owed = await _owed(ctx, "a")
    assert list(owed) == ["c|2026-11-05"] and owed["c|2026-11-05"].startswith("2,")
    # So the newer value is still owed, and a repair brings it.
    assert await writes.repair(ctx, "a", now_ms) == 1
    assert await standings(client, "c") == [("a", 1, 3000)]
    assert await _owed(ctx, "a") == {}


# --- the sweep finds users with owed days ----------------------------------------------


async def test_the_sweep_pushes_owed_days(
    client: httpx.AsyncClient, ctx: AppContext, clock: FixedClock
) -> None:
    await create_comp(client, "c")
    await create_comp(client, "d", start_date="2026-11-04", end_date="2026-11-12")
    await join(client, "c", "a", "b")
    await join(client, "d", "b")
    now_ms = to_ms(clock.now())
    await writes.store(ctx, "a", now_ms, [("2026-11-03", "phone", (1200, 0, 0, 0))])
    await writes.store(ctx, "b", now_ms, [("2026-11-05", "watch", (800, 0, 0, 0))])
    assert await standings(client, "c") == [("a", 1, 0), ("b", 1, 0)]
    await sweep.run_once(ctx)
    assert await standings(client, "c") == [("a", 1, 1200), ("b", 2, 800)]
    assert await standings(client, "d") == [("b", 1, 800)]
    assert await _owed(ctx, "a") == {} and await _owed(ctx, "b") == {}
    assert await sweep.run_once(ctx) == 0


# --- request rules ----------------------------------------------------------------------


async def test_around_me_needs_a_user(client: httpx.AsyncClient) -> None:
    await create_comp(client, "c")
    await join(client, "c", "a")
    resp = await client.get(f"{API}/leaderboard/c", params={"around": "me"}, headers=SERVICE_AUTH)
    assert "around" in detail_fields(resp)
    assert_error(resp, 422, "validation_error")
    # The service role names the user instead; a user may say "me".
    resp = await client.get(f"{API}/leaderboard/c", params={"around": "a"}, headers=SERVICE_AUTH)
    assert resp.status_code == 200, resp.text
    assert (await board(client, "c", "a", around="me"))["entries"][0]["user_id"] == "a"


async def test_a_goal_target_above_the_metrics_daily_cap_is_refused(
    client: httpx.AsyncClient,
) -> None:
    def body(cid: str, target: int, metric: str = "active_minutes") -> dict[str, Any]:
        return {
            "id": cid,
            "name": cid,
            "metric": metric,
            "format": "goal",
            "goal": {"daily_target": target, "min_days": 1},
            "start_date": "2026-11-20",
            "end_date": "2026-11-30",
        }

    resp = await client.post(f"{API}/competitions", json=body("g1", 1441), headers=auth("org"))
    assert "goal.daily_target" in detail_fields(resp)
    assert_error(resp, 422, "validation_error")
    resp = await client.post(f"{API}/competitions", json=body("g2", 1440), headers=auth("org"))
    assert resp.status_code == 201, resp.text
    # An edit that leaves the target above the new metric's cap is refused as well.
    resp = await client.post(
        f"{API}/competitions", json=body("g3", 5000, "steps"), headers=auth("org")
    )
    assert resp.status_code == 201, resp.text
    resp = await client.patch(
        f"{API}/competitions/g3", json={"metric": "active_minutes"}, headers=auth("org")
    )
    assert "goal.daily_target" in detail_fields(resp)
    assert_error(resp, 422, "validation_error")
    resp = await client.patch(
        f"{API}/competitions/g2",
        json={"goal": {"daily_target": 1441, "min_days": 1}},
        headers=auth("org"),
    )
    assert_error(resp, 422, "validation_error")
    resp = await client.get(f"{API}/competitions/g3", headers=auth("org"))
    assert resp.json()["data"]["metric"] == "steps"


async def test_grace_hours_are_fixed_once_started(client: httpx.AsyncClient) -> None:
    await create_comp(client, "early", start_date="2026-11-20", end_date="2026-11-30")
    resp = await client.patch(
        f"{API}/competitions/early", json={"grace_hours": 48}, headers=auth("org")
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["data"]["accepts_syncs_until"] == "2026-12-03T12:00:00.000Z"
    await create_comp(client, "running")
    for headers in (auth("org"), SERVICE_AUTH):
        resp = await client.patch(
            f"{API}/competitions/running", json={"grace_hours": 48}, headers=headers
        )
        assert_error(resp, 409, "competition_started")
    resp = await client.get(f"{API}/competitions/running", headers=auth("org"))
    assert resp.json()["data"]["grace_hours"] == 24


async def test_distance_and_calories_round_half_to_even(
    client: httpx.AsyncClient, ctx: AppContext
) -> None:
    await create_comp(client, "c", metric="distance")
    await join(client, "c", "a")
    halves = {"2026-11-02": 0.5, "2026-11-03": 1.5, "2026-11-04": 2.5, "2026-11-05": 3.5}
    await sync(client, "a", *(rec(d, 0, distance=v, calories=v) for d, v in halves.items()))
    days = {d["date"]: (d["distance"], d["calories"]) for d in await history(client, "a")}
    assert days == {
        "2026-11-02": (0, 0),
        "2026-11-03": (2, 2),
        "2026-11-04": (2, 2),
        "2026-11-05": (4, 4),
    }
    entry = (await board(client, "c"))["entries"][0]
    assert (entry["score"], entry["distance"], entry["calories"]) == (8, 8, 8)
    # A trusted write rounds the same way.
    body = {"user_id": "a", "competition_id": "c", "distance": 2.5, "calories": 0.5}
    resp = await client.post(f"{API}/leaderboard/update", json=body, headers=SERVICE_AUTH)
    assert resp.status_code == 200, resp.text
    entry = resp.json()["data"]["entry"]
    assert (entry["score"], entry["distance"], entry["calories"]) == (2, 2, 0)


async def test_a_cancel_leaves_an_audit_record(
    client: httpx.AsyncClient, ctx: AppContext, clock: FixedClock
) -> None:
    await create_comp(client, "c")
    await create_comp(client, "d")
    await join(client, "c", "a")
    resp = await client.post(
        f"{API}/competitions/c/cancel", json={"reason": "storm"}, headers=auth("org")
    )
    assert resp.status_code == 200, resp.text
    resp = await client.post(f"{API}/competitions/d/cancel", headers=SERVICE_AUTH)
    assert resp.status_code == 200, resp.text
    now_ms = to_ms(clock.now())
    for cid, by, reason in (("c", "org", "storm"), ("d", "service", "")):
        resp = await client.get(f"{API}/competitions/{cid}/audit", headers=SERVICE_AUTH)
        assert resp.status_code == 200, resp.text
        records = resp.json()["data"]["records"]
        last = (await _events(ctx, cid))[-1]
        assert last.data["type"] == "cancelled"
        assert [(r["action"], r["by"], r["reason"], r["at"], r["event_id"]) for r in records] == [
            ("cancel", by, reason, from_ms(now_ms), last.event_id)
        ]
    # The organizer sees it too; a participant sees only records about themself.
    resp = await client.get(f"{API}/competitions/c/audit", headers=auth("org"))
    assert [r["action"] for r in resp.json()["data"]["records"]] == ["cancel"]
    resp = await client.get(f"{API}/competitions/c/audit", headers=auth("a"))
    assert resp.status_code == 200, resp.text
    assert resp.json()["data"]["records"] == []
