"""Fair play in the engine (issue #10, SPEC §6.6), on the real Redis: the flags a record
raises (its user's own history, a human stride, active minutes, the day's field, late
raises and late back-fills), that a flag never blocks a sync, the reviewer's decisions
(dismiss, exclude, restore) and disqualification with their events and audit records,
their refusal once a competition is closed, and the days' field the analytics read
staying equal to the counted values through exclusions, disqualification and recounts.

Competitions, joins and most syncs go through the HTTP API; flags, reviews and the
field through the engine's functions. Each test fails if the rule it names is removed
from the engine.
"""

from __future__ import annotations

import asyncio
import math
import random
import statistics
from datetime import date, timedelta
from typing import Any

import httpx

from healthcomp import demo
from healthcomp.core.clock import FixedClock, to_ms
from healthcomp.core.context import AppContext
from healthcomp.engine import flags as fp
from healthcomp.engine import reads, writes
from healthcomp.engine.codes import Reply
from healthcomp.engine.model import Disqualified, Event, Reviewed
from tests.conftest import auth
from tests.domain.helpers import (
    API,
    at,
    board,
    create_comp,
    join,
    rec,
    standings,
    sync,
    sync_raw,
)

# The test clock stands at 2026-11-10 12:00 UTC: the join day of every join below.
TODAY = "2026-11-10"
Values = tuple[int, int, int, int]


def walk(day: str, steps: int, **extra: Any) -> dict[str, Any]:
    """A plausible day of walking: a 0.75 m stride, 100 steps an active minute."""
    metrics: dict[str, Any] = {"distance": round(steps * 0.75), "active_minutes": steps // 100}
    metrics.update(extra)
    return rec(day, steps, **metrics)


def days_before(last: str, n: int) -> list[str]:
    """The n days before `last`, oldest first."""
    end = date.fromisoformat(last)
    return [(end - timedelta(days=n - i)).isoformat() for i in range(n)]


def kinds(flag: dict[str, Any]) -> set[str]:
    return set(flag.get("kinds") or {})


async def flags_by_user(ctx: AppContext, cid: str) -> dict[tuple[str, str], dict[str, Any]]:
    """The competition's flags by (user, day): one flag per participant and day."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for flag in await reads.flags(ctx, cid):
        key = (flag["user_id"], flag["day"])
        assert key not in out, f"two flags for {key}"
        out[key] = flag
    return out


async def version(ctx: AppContext, cid: str) -> int:
    state = await reads.board_state(ctx, cid)
    assert state is not None
    return state.version


async def events_after(ctx: AppContext, cid: str, since: int) -> list[Event]:
    return await reads.events_since(ctx, cid, since)


async def review(
    ctx: AppContext, clock: FixedClock, cid: str, flag: dict[str, Any], action: str
) -> Reviewed:
    clock.advance(seconds=1)
    return await writes.review(
        ctx,
        cid,
        str(flag["id"]),
        str(flag["user_id"]),
        action=action,
        actor="org",
        reason=f"{action} after a look",
        now_ms=to_ms(clock.now()),
    )


async def disqualify(
    ctx: AppContext, clock: FixedClock, cid: str, user: str, action: str = "disqualify"
) -> Disqualified:
    clock.advance(seconds=1)
    return await writes.disqualify(
        ctx, cid, user, action=action, actor="org", reason="fair play", now_ms=to_ms(clock.now())
    )


async def leave(client: httpx.AsyncClient, cid: str, user: str) -> None:
    resp = await client.post(f"{API}/competitions/{cid}/leave", headers=auth(user))
    assert resp.status_code == 200, resp.text


async def history_of_walker(client: httpx.AsyncClient, user: str, seed: int) -> list[int]:
    """Twenty days of about 8,000 steps before today, synced at once; their values."""
    rng = random.Random(seed)
    values = [rng.randint(7_400, 8_600) for _ in range(20)]
    await sync(
        client, user, *(walk(d, v) for d, v in zip(days_before(TODAY, 20), values, strict=True))
    )
    return values


def median_rounded(values: list[int]) -> int:
    return math.floor(statistics.median(values) + 0.5)


# --- the flags a record raises ---------------------------------------------------------


async def test_a_day_far_above_the_users_own_history_is_flagged_and_still_counts(
    client: httpx.AsyncClient, ctx: AppContext
) -> None:
    await create_comp(client, "c")
    await join(client, "c", "walker", "newcomer")
    values = await history_of_walker(client, "walker", seed=1)
    assert await reads.flags(ctx, "c") == []

    resp = await sync_raw(client, "walker", {"records": [walk(TODAY, 95_000)]})
    assert resp.status_code == 200, resp.text  # a flag never blocks a sync
    counted = sum(values[-9:]) + 95_000  # 2026-11-01 .. 11-09, then today
    assert resp.json()["data"]["competitions"] == [
        {"competition_id": "c", "score": counted, "rank": 1, "previous_rank": 1}
    ]
    assert (await standings(client, "c"))[0] == ("walker", 1, counted)

    (flag,) = await reads.flags(ctx, "c")
    assert (flag["user_id"], flag["day"], flag["state"]) == ("walker", TODAY, "open")
    assert kinds(flag) == {fp.OWN_HISTORY}
    detail = flag["kinds"][fp.OWN_HISTORY]
    assert detail["metric"] == "steps" and detail["value"] == 95_000
    assert detail["typical"] == median_rounded(values)
    assert 7_400 <= detail["typical"] <= 8_600

    # Too short a history (six days) is no history: the same day raises nothing.
    await sync(client, "newcomer", *(walk(d, 8_000) for d in days_before(TODAY, 6)))
    await sync(client, "newcomer", walk(TODAY, 95_000))
    assert [f["user_id"] for f in await reads.flags(ctx, "c")] == ["walker"]


async def test_records_outside_a_human_stride_or_cadence_are_flagged(
    client: httpx.AsyncClient, ctx: AppContext
) -> None:
    await create_comp(client, "c")
    await join(client, "c", "rider", "shaker", "runner")
    # 40 km from 2,000 steps: a 20 m stride (the active minutes allow the distance).
    await sync(client, "rider", rec(TODAY, 2_000, distance=40_000, active_minutes=100))
    # 35,000 steps in 10 active minutes: 3,500 steps a minute.
    await sync(client, "shaker", rec(TODAY, 35_000, distance=26_000, active_minutes=10))
    # The same count at a runner's cadence, and a long run's stride: nothing.
    await sync(client, "runner", rec(TODAY, 35_000, distance=42_000, active_minutes=200))

    found = await flags_by_user(ctx, "c")
    assert set(found) == {("rider", TODAY), ("shaker", TODAY)}
    rider, shaker = found["rider", TODAY], found["shaker", TODAY]
    assert kinds(rider) == {fp.STRIDE}
    assert rider["kinds"][fp.STRIDE] == {"steps": 2_000, "distance": 40_000}
    assert kinds(shaker) == {fp.NO_ACTIVE_MINUTES}
    assert shaker["kinds"][fp.NO_ACTIVE_MINUTES] == {
        "steps": 35_000,
        "distance": 26_000,
        "active_minutes": 10,
    }
    # Counted all the same.
    assert {u: s for u, _, s in await standings(client, "c")} == {
        "rider": 2_000,
        "shaker": 35_000,
        "runner": 35_000,
    }


async def test_a_day_far_above_the_days_field_is_flagged(
    client: httpx.AsyncClient, ctx: AppContext
) -> None:
    """25 participants walk 8-10k; one at 60,000 is flagged, one at 25,000 (far above
    the field's spread, but under three times its median) is not. In a field under
    FIELD_MIN participants the same 60,000 raises nothing."""
    await create_comp(client, "c")
    await create_comp(client, "small")
    field = [f"f{i:02d}" for i in range(25)]
    await join(client, "c", *field, "good-day", "outlier")
    await join(client, "small", *field[:10], "outlier")
    rng = random.Random(3)
    values = {user: rng.randint(8_000, 10_000) for user in field}
    await asyncio.gather(*(sync(client, u, walk(TODAY, v)) for u, v in values.items()))
    await sync(client, "good-day", walk(TODAY, 25_000))
    await sync(client, "outlier", walk(TODAY, 60_000))

    (flag,) = await reads.flags(ctx, "c")
    assert (flag["user_id"], flag["day"]) == ("outlier", TODAY)
    assert kinds(flag) == {fp.FIELD_OUTLIER}
    detail = flag["kinds"][fp.FIELD_OUTLIER]
    assert detail["metric"] == "steps" and detail["value"] == 60_000
    # The field it was compared with: the 25 and the good day, not the outlier itself.
    assert detail["field_size"] == 26
    assert detail["field_median"] == statistics.median([*values.values(), 25_000])
    assert await reads.flags(ctx, "small") == []
    assert (await standings(client, "c"))[0] == ("outlier", 1, 60_000)


async def test_a_day_raised_a_lot_in_the_grace_period_is_flagged(
    client: httpx.AsyncClient, ctx: AppContext, clock: FixedClock
) -> None:
    # The window ends 2026-11-10: over everywhere at 11-11 12:00 UTC, grace until 11-12.
    await create_comp(client, "c", end_date=TODAY)
    await join(client, "c", "late", "small", "early")
    for user in ("late", "small", "early"):
        await sync(client, user, walk("2026-11-08", 8_000), walk("2026-11-09", 8_000))
    # A big raise before the end is no late raise.
    await sync(client, "early", walk("2026-11-09", 30_000))

    clock.at = at(2026, 11, 11, 18)  # in the grace period
    data = await sync(client, "late", walk("2026-11-09", 30_000))
    assert data["competitions"][0]["score"] == 38_000
    await sync(client, "small", walk("2026-11-09", 9_000))  # +1,000: under LATE_MIN

    found = await flags_by_user(ctx, "c")
    assert set(found) == {("late", "2026-11-09")}
    flag = found["late", "2026-11-09"]
    assert kinds(flag) == {fp.LATE_RAISE}
    assert flag["kinds"][fp.LATE_RAISE] == {"metric": "steps", "value": 30_000, "before": 8_000}


async def test_a_day_stored_before_the_end_and_applied_in_the_grace_is_not_a_late_raise(
    client: httpx.AsyncClient, ctx: AppContext, clock: FixedClock
) -> None:
    """The raise happened before the end: it is the time a day was stored that makes it
    late, not the time a repair pushed it to the competition."""
    await create_comp(client, "c", end_date=TODAY)
    await join(client, "c", "a")
    await sync(client, "a", walk("2026-11-09", 8_000))
    # Stored at 11-10 12:00 (before the end); the push to the competition fails and is
    # left owed, as when a request dies between the two steps of a sync.
    code, _ = await writes.store(
        ctx, "a", to_ms(clock.now()), [("2026-11-09", "watch", (30_000, 22_500, 0, 300))]
    )
    assert code is Reply.OK
    clock.at = at(2026, 11, 11, 18)  # in the grace period
    assert await writes.repair(ctx, "a", to_ms(clock.now())) == 1
    assert (await standings(client, "c")) == [("a", 1, 30_000)]
    assert [kinds(f) for f in await reads.flags(ctx, "c")] == []


async def test_a_day_before_the_join_synced_after_it_near_the_cap_is_flagged(
    client: httpx.AsyncClient, ctx: AppContext, clock: FixedClock
) -> None:
    await create_comp(client, "c")
    # Synced before joining, then back-filled by the join: not flagged.
    await sync(client, "prepared", walk("2026-11-05", 95_000))
    clock.advance(minutes=1)
    await join(client, "c", "prepared", "backfiller", "under", "today")
    clock.advance(minutes=1)
    joined_ms = to_ms(clock.now()) - 60_000
    # After joining: a past day at the cap (flagged), one under 90% of it (not), and
    # the join's own day at the cap (not before the join).
    await sync(client, "backfiller", walk("2026-11-05", 95_000))
    await sync(client, "under", walk("2026-11-05", 89_000))
    await sync(client, "today", walk(TODAY, 95_000))

    found = await flags_by_user(ctx, "c")
    assert set(found) == {("backfiller", "2026-11-05")}
    flag = found["backfiller", "2026-11-05"]
    assert kinds(flag) == {fp.LATE_BACKFILL}
    assert flag["kinds"][fp.LATE_BACKFILL] == {
        "metric": "steps",
        "value": 95_000,
        "joined_ms": joined_ms,
    }
    assert {u: s for u, _, s in await standings(client, "c")} == {
        "prepared": 95_000,
        "backfiller": 95_000,
        "under": 89_000,
        "today": 95_000,
    }


async def test_the_demo_competitions_normal_users_raise_no_flags(ctx: AppContext) -> None:
    assert await demo.seed(ctx) is True
    inputs = await reads.analytics_inputs(ctx, demo.DEMO_ID, "2026-10-21", TODAY)
    assert inputs is not None
    # Not vacuous: fifty participants, three weeks of days counted.
    assert len(inputs.board) == 50
    assert sum(1 for d in inputs.days if d.active > 40) >= 19
    assert await reads.flags(ctx, demo.DEMO_ID) == []


# --- review: dismiss, exclude, restore --------------------------------------------------


async def test_review_excludes_restores_and_dismisses_with_events_and_audit(
    client: httpx.AsyncClient, ctx: AppContext, clock: FixedClock
) -> None:
    await create_comp(client, "c")
    await join(client, "c", "a", "b")
    values = await history_of_walker(client, "a", seed=2)
    base = sum(values[-9:])  # a's 2026-11-01 .. 11-09
    await sync(client, "b", *(walk(d, 12_000) for d in days_before(TODAY, 9)))
    await sync(client, "a", walk(TODAY, 95_000))
    assert await standings(client, "c") == [("a", 1, base + 95_000), ("b", 2, 108_000)]
    (flag,) = await reads.flags(ctx, "c")

    # exclude: the day leaves the score, the board and the day's field; one score event.
    since = await version(ctx, "c")
    done = await review(ctx, clock, "c", flag, "exclude")
    assert done.code is Reply.OK and done.changed
    assert done.flag is not None and done.flag["state"] == "excluded"
    assert await standings(client, "c") == [("b", 1, 108_000), ("a", 2, base)]
    standing = await reads.standing(ctx, "c", "a")
    assert standing is not None and (standing.score, standing.rank) == (base, 2)
    (event,) = await events_after(ctx, "c", since)
    assert event.event_id == done.event_id
    assert {k: event.data[k] for k in ("type", "user_id", "score", "previous_score")} == {
        "type": "review",
        "user_id": "a",
        "score": base,
        "previous_score": base + 95_000,
    }
    assert (event.data["rank"], event.data["previous_rank"]) == (2, 1)
    assert event.data["passed_by"] == ["b"]
    inputs = await reads.analytics_inputs(ctx, "c", TODAY, TODAY)
    assert inputs is not None and (inputs.days[0].total, inputs.days[0].active) == (0, 0)

    # The same decision twice changes nothing, and says so.
    since = await version(ctx, "c")
    again = await review(ctx, clock, "c", flag, "exclude")
    assert again.code is Reply.OK and not again.changed
    assert await events_after(ctx, "c", since) == []

    # restore: counted again.
    restored = await review(ctx, clock, "c", flag, "restore")
    assert restored.changed and restored.flag is not None and restored.flag["state"] == "open"
    assert await standings(client, "c") == [("a", 1, base + 95_000), ("b", 2, 108_000)]
    (event,) = await events_after(ctx, "c", since)
    assert (event.data["type"], event.data["score"], event.data["rank"]) == (
        "review",
        base + 95_000,
        1,
    )

    # dismiss: the score stays; a `reviewed` event names nobody.
    since = await version(ctx, "c")
    dismissed = await review(ctx, clock, "c", flag, "dismiss")
    assert dismissed.changed and dismissed.flag is not None
    assert dismissed.flag["state"] == "dismissed"
    assert dismissed.flag["reviewed_value"] == 95_000
    (event,) = await events_after(ctx, "c", since)
    assert (event.data["type"], event.data["action"]) == ("reviewed", "dismiss")
    assert "user_id" not in event.data
    assert await standings(client, "c") == [("a", 1, base + 95_000), ("b", 2, 108_000)]
    assert not (await review(ctx, clock, "c", flag, "dismiss")).changed

    records = await reads.audit_log(ctx, "c")
    assert [
        (r["action"], r["user_id"], r["day"], r["flag_id"], r["by"], r["reason"]) for r in records
    ] == [
        (action, "a", TODAY, flag["id"], "org", f"{action} after a look")
        for action in ("exclude", "restore", "dismiss")
    ]
    assert [(r["score_before"], r["score_after"]) for r in records] == [
        (base + 95_000, base),
        (base, base + 95_000),
        (None, None),
    ]
    assert [r["event_id"] for r in records] == [
        done.event_id,
        restored.event_id,
        dismissed.event_id,
    ]

    # A dismissed flag stays dismissed at or below the value it was dismissed at, and
    # opens again when the day rises above it.
    await sync(client, "a", walk(TODAY, 94_000))
    assert (await reads.flag(ctx, "c", flag["id"]) or {})["state"] == "dismissed"
    await sync(client, "a", walk(TODAY, 96_000))
    reopened = await reads.flag(ctx, "c", flag["id"])
    assert reopened is not None and reopened["state"] == "open"
    assert reopened["value"] == 96_000
    assert len(await reads.flags(ctx, "c")) == 1  # still one flag for the day


async def test_an_excluded_day_stays_excluded_through_syncs_and_rejoining(
    client: httpx.AsyncClient, ctx: AppContext, clock: FixedClock
) -> None:
    await create_comp(client, "c")
    await join(client, "c", "a", "b")
    values = await history_of_walker(client, "a", seed=4)
    base = sum(values[-9:])
    await sync(client, "a", walk(TODAY, 95_000))
    await sync(client, "b", walk(TODAY, 1_000))
    (flag,) = await reads.flags(ctx, "c")
    assert (await review(ctx, clock, "c", flag, "exclude")).changed
    assert (await standings(client, "c"))[0] == ("a", 1, base)

    # A new value of the day is kept, not counted, and moves nothing.
    since = await version(ctx, "c")
    clock.advance(minutes=1)
    data = await sync(client, "a", walk(TODAY, 97_000))
    assert data["competitions"][0]["score"] == base
    assert await events_after(ctx, "c", since) == []
    assert await reads.counted_days(ctx, "c", [("a", TODAY)]) == [[97_000, 72_750, 0, 970]]
    kept = await reads.flag(ctx, "c", flag["id"])
    assert kept is not None and kept["state"] == "excluded"

    # Leave and join again: the back-fill brings the day back, still excluded.
    clock.advance(minutes=1)
    await leave(client, "c", "a")
    inputs = await reads.analytics_inputs(ctx, "c", "2026-11-09", TODAY)
    assert inputs is not None and [d.total for d in inputs.days] == [0, 1_000]
    clock.advance(minutes=1)
    await join(client, "c", "a")
    assert (await standings(client, "c"))[0] == ("a", 1, base)
    inputs = await reads.analytics_inputs(ctx, "c", TODAY, TODAY)
    assert inputs is not None and inputs.days[0].total == 1_000  # b's only
    kept = await reads.flag(ctx, "c", flag["id"])
    assert kept is not None and kept["state"] == "excluded"

    # Restored, the day's newest value counts.
    assert (await review(ctx, clock, "c", flag, "restore")).changed
    assert (await standings(client, "c"))[0] == ("a", 1, base + 97_000)


# --- disqualification ------------------------------------------------------------------


async def test_disqualify_and_reinstate(
    client: httpx.AsyncClient, ctx: AppContext, clock: FixedClock
) -> None:
    await create_comp(client, "c")
    await join(client, "c", "a", "b", "x")
    await sync(client, "a", walk("2026-11-02", 20_000))
    await sync(client, "b", walk("2026-11-02", 10_000))
    await sync(client, "x", walk("2026-11-02", 5_000))
    assert await standings(client, "c") == [("a", 1, 20_000), ("b", 2, 10_000), ("x", 3, 5_000)]

    since = await version(ctx, "c")
    done = await disqualify(ctx, clock, "c", "a")
    assert done.code is Reply.OK and done.changed and done.rank is None
    assert done.score == 20_000
    assert await standings(client, "c") == [("b", 1, 10_000), ("x", 2, 5_000)]
    assert (await board(client, "c"))["total_count"] == 2
    payout = await reads.payout_inputs(ctx, "c", places=3)
    assert payout is not None and [c.user_id for c in payout.top] == ["b", "x"]
    (event,) = await events_after(ctx, "c", since)
    assert event.event_id == done.event_id
    assert (event.data["type"], event.data["user_id"], event.data["previous_rank"]) == (
        "disqualify",
        "a",
        1,
    )
    assert event.data["rank"] is None
    assert not (await disqualify(ctx, clock, "c", "a")).changed
    # Off the field of the day too.
    inputs = await reads.analytics_inputs(ctx, "c", "2026-11-02", "2026-11-02")
    assert inputs is not None and inputs.days[0].total == 15_000
    assert "a" in inputs.entries and "a" not in dict(inputs.board)

    # Later syncs change the entry, silently, and do not put them back.
    since = await version(ctx, "c")
    clock.advance(minutes=1)
    resp = await sync_raw(client, "a", {"records": [walk("2026-11-03", 30_000)]})
    assert resp.status_code == 200, resp.text
    standing = await reads.standing(ctx, "c", "a")
    assert standing is not None and (standing.score, standing.rank) == (50_000, None)
    assert await events_after(ctx, "c", since) == []
    assert await standings(client, "c") == [("b", 1, 10_000), ("x", 2, 5_000)]
    inputs = await reads.analytics_inputs(ctx, "c", "2026-11-03", "2026-11-03")
    assert inputs is not None and (inputs.days[0].total, inputs.days[0].active) == (0, 0)

    # Leaving and joining again keeps the disqualification.
    clock.advance(minutes=1)
    await leave(client, "c", "a")
    clock.advance(minutes=1)
    await join(client, "c", "a")
    standing = await reads.standing(ctx, "c", "a")
    assert standing is not None and (standing.score, standing.rank) == (50_000, None)
    assert await standings(client, "c") == [("b", 1, 10_000), ("x", 2, 5_000)]
    participation = await reads.participation(ctx, "c", "a")
    assert participation is not None and participation["disqualified"]["by"] == "org"
    payout = await reads.payout_inputs(ctx, "c", places=3)
    assert payout is not None and [c.user_id for c in payout.top] == ["b", "x"]

    # Reinstated: back on the board at their score, with a rank.
    since = await version(ctx, "c")
    back = await disqualify(ctx, clock, "c", "a", "reinstate")
    assert back.changed and (back.score, back.rank) == (50_000, 1)
    assert await standings(client, "c") == [("a", 1, 50_000), ("b", 2, 10_000), ("x", 3, 5_000)]
    (event,) = await events_after(ctx, "c", since)
    assert (event.data["type"], event.data["score"], event.data["rank"]) == ("reinstate", 50_000, 1)
    payout = await reads.payout_inputs(ctx, "c", places=3)
    assert payout is not None and [c.user_id for c in payout.top] == ["a", "b", "x"]
    participation = await reads.participation(ctx, "c", "a")
    assert participation is not None and "disqualified" not in participation
    inputs = await reads.analytics_inputs(ctx, "c", "2026-11-02", "2026-11-03")
    assert inputs is not None and [d.total for d in inputs.days] == [35_000, 30_000]

    assert [
        (r["action"], r["user_id"], r["by"], r["score"]) for r in await reads.audit_log(ctx, "c")
    ] == [
        ("disqualify", "a", "org", 20_000),
        ("reinstate", "a", "org", 50_000),
    ]


async def test_review_and_disqualify_are_refused_once_closed(
    client: httpx.AsyncClient, ctx: AppContext, clock: FixedClock
) -> None:
    await create_comp(client, "fin", end_date=TODAY)  # finalized below
    await create_comp(client, "can")  # cancelled below
    for cid in ("fin", "can"):
        await join(client, cid, "a", "b")
    await sync(client, "a", rec("2026-11-09", 2_000, distance=40_000, active_minutes=100))
    await sync(client, "b", walk("2026-11-09", 9_000))

    resp = await client.post(f"{API}/competitions/can/cancel", headers=auth("org"))
    assert resp.status_code == 200, resp.text
    clock.at = at(2026, 11, 13)  # past fin's grace period
    resp = await client.post(f"{API}/prizes/distribute/fin", headers=auth("org"))
    assert resp.status_code == 200, resp.text

    for cid in ("fin", "can"):
        (flag,) = await reads.flags(ctx, cid)
        since = await version(ctx, cid)
        for action in ("exclude", "dismiss", "restore"):
            assert (await review(ctx, clock, cid, flag, action)).code is Reply.CLOSED
        for user, action in (("a", "disqualify"), ("b", "disqualify"), ("a", "reinstate")):
            assert (await disqualify(ctx, clock, cid, user, action)).code is Reply.CLOSED
        assert (await reads.flag(ctx, cid, flag["id"]) or {})["state"] == "open"
        assert await events_after(ctx, cid, since) == []
        actions = {r["action"] for r in await reads.audit_log(ctx, cid)}
        assert not actions & {"exclude", "dismiss", "restore", "disqualify", "reinstate"}


# --- the days' field through exclusions, disqualification and recounts ------------------


async def _settled_recount(ctx: AppContext, cid: str) -> None:
    for _ in range(500):
        if await ctx.r.hget(ctx.keys.recount(cid), "state") == "done":
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the recount did not finish")


async def _edit(client: httpx.AsyncClient, ctx: AppContext, cid: str, **fields: Any) -> None:
    resp = await client.patch(f"{API}/competitions/{cid}", json=fields, headers=auth("org"))
    assert resp.status_code == 200, resp.text
    await _settled_recount(ctx, cid)


async def test_the_days_field_equals_the_counted_values_through_recounts(
    client: httpx.AsyncClient, ctx: AppContext, clock: FixedClock
) -> None:
    """Per day, the field's total, size and median (what the analytics read) are those
    of the participants' counted values of the metric: excluded days and disqualified
    participants left out, before and after recounts that move the window and change
    the metric."""
    first, last = "2026-11-12", "2026-11-20"
    await create_comp(client, "r", start_date=first, end_date=last)  # upcoming
    users = [f"u{i}" for i in range(6)]
    await join(client, "r", *users)
    window_days = [(date(2026, 11, 12) + timedelta(days=i)).isoformat() for i in range(9)]
    rng = random.Random(5)
    data: dict[str, dict[str, Values]] = {}
    for i, user in enumerate(users):
        data[user] = {}
        for day in window_days[:5]:
            if rng.random() < 0.2:
                continue  # a day without a record
            steps = rng.randint(2_000, 15_000)
            data[user][day] = (steps, round(steps * 0.7) + i, steps // 25, steps // 100)
    data["u0"]["2026-11-15"] = (2_000, 40_000, 90, 100)  # a 20 m stride: flagged
    data["u5"]["2026-11-15"] = (12_000, 9_000, 480, 120)
    now_ms = to_ms(clock.now())
    for user, days in data.items():
        # The engine's own sync: the window lies in the future (the API refuses it).
        records = [(day, "phone", values) for day, values in days.items()]
        done = await writes.sync(ctx, user, now_ms, records)
        assert done.code is Reply.OK

    excluded: set[tuple[str, str]] = set()
    disqualified: set[str] = set()

    async def check(metric: int, start: str) -> None:
        inputs = await reads.analytics_inputs(ctx, "r", first, last)
        assert inputs is not None
        got = [(d.day, d.total, d.active, d.median) for d in inputs.days]
        want = []
        for day in window_days:
            counted = [
                days[day][metric]
                for user, days in data.items()
                if day >= start
                and day in days
                and user not in disqualified
                and (user, day) not in excluded
                and days[day][metric] > 0
            ]
            median = float(statistics.median(counted)) if counted else 0.0
            want.append((day, sum(counted), len(counted), median))
        assert got == want
        # ... and the board's scores are the same counted values, summed per user.
        scores = {u: s for u, _, s in await standings(client, "r")}
        assert scores == {
            user: sum(
                v[metric] for day, v in days.items() if day >= start and (user, day) not in excluded
            )
            for user, days in data.items()
            if user not in disqualified
        }

    await check(0, first)
    (flag,) = await reads.flags(ctx, "r")
    assert (flag["user_id"], flag["day"], kinds(flag)) == ("u0", "2026-11-15", {fp.STRIDE})
    assert (await review(ctx, clock, "r", flag, "exclude")).changed
    excluded.add(("u0", "2026-11-15"))
    assert (await disqualify(ctx, clock, "r", "u5")).changed
    disqualified.add("u5")
    await check(0, first)

    await _edit(client, ctx, "r", start_date="2026-11-14")  # a shorter window
    await check(0, "2026-11-14")
    await _edit(client, ctx, "r", metric="distance")
    await check(1, "2026-11-14")

    assert (await disqualify(ctx, clock, "r", "u5", "reinstate")).changed
    disqualified.clear()
    await check(1, "2026-11-14")
    assert (await review(ctx, clock, "r", flag, "restore")).changed
    excluded.clear()
    await check(1, "2026-11-14")
