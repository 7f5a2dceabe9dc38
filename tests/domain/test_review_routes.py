"""Fair-play review over HTTP (SPEC §5, §6.6): the organizer finds a suspicious day,
excludes it and watches the leaderboard, the payout preview and the audit follow;
restores, dismisses, disqualifies and reinstates; who may do what, and the refusals in
the SPEC §4 envelope."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import SERVICE_AUTH, assert_error, auth
from tests.domain.helpers import API, app_clock, at, create_comp, join, rec, standings, sync
from tests.test_openapi import Checker

# The cheater walks about 8,000 a day (from 2026-10-27 on), then "walks" 95,000 on
# 2026-11-10 (today). Each day comes with plausible active minutes, so the only thing
# wrong with the day is how far above their own history it is.
HISTORY = [7600, 8200, 7900, 8400, 8100, 7700, 8300, 8000, 7800, 8250, 7950, 8050, 8150, 7850]
HISTORY_DAYS = [f"2026-10-{d}" for d in range(27, 32)] + [f"2026-11-{d:02d}" for d in range(1, 10)]
CHEAT_DAY, CHEAT_STEPS = "2026-11-10", 95_000
HONEST = {"a": 10_000, "b": 9_000, "c": 8_500}  # a day, 2026-11-01 .. 2026-11-10
WALKED = dict(zip(HISTORY_DAYS, HISTORY, strict=True))
IN_WINDOW = sum(v for d, v in WALKED.items() if d >= "2026-11-01")
CHEAT_SCORE = IN_WINDOW + CHEAT_STEPS
POOL = 4 * 1_000 + 5_000  # four entry fees and the organizer's prize, no rake


def walk(day: str, steps: int) -> dict[str, Any]:
    return rec(day, steps, active_minutes=max(30, steps // 120))


async def plant(client: httpx.AsyncClient, cid: str, cheat: str = "cheat") -> None:
    """Created and joined on 2026-11-01; synced on 2026-11-10 (today)."""
    clock = app_clock(client)
    clock.at = at(2026, 11, 1, 8)
    await create_comp(client, cid, entry_fee_cents=1_000, prize_pool_cents=5_000)
    await join(client, cid, cheat, *HONEST)
    clock.at = at(2026, 11, 10, 12)
    for user, steps in HONEST.items():
        await sync(client, user, *(walk(f"2026-11-{d:02d}", steps) for d in range(1, 11)))
    await sync(client, cheat, *(walk(d, s) for d, s in WALKED.items()))
    await sync(client, cheat, walk(CHEAT_DAY, CHEAT_STEPS))


def headers(who: str) -> dict[str, str]:
    return SERVICE_AUTH if who == "service" else auth(who)


async def flags(
    client: httpx.AsyncClient, cid: str, who: str = "org", **params: Any
) -> dict[str, Any]:
    resp = await client.get(f"{API}/competitions/{cid}/flags", params=params, headers=headers(who))
    assert resp.status_code == 200, resp.text
    data: dict[str, Any] = resp.json()["data"]
    return data


async def review_raw(
    client: httpx.AsyncClient, cid: str, flag_id: str, body: Any, who: str = "org"
) -> httpx.Response:
    return await client.post(
        f"{API}/competitions/{cid}/flags/{flag_id}", json=body, headers=headers(who)
    )


async def review(
    client: httpx.AsyncClient, cid: str, flag_id: str, action: str, reason: str, who: str = "org"
) -> dict[str, Any]:
    resp = await review_raw(client, cid, flag_id, {"action": action, "reason": reason}, who)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["success"] is True and body["message"]
    data: dict[str, Any] = body["data"]
    return data


async def decide_raw(
    client: httpx.AsyncClient, cid: str, user: str, action: str, body: Any, who: str = "org"
) -> httpx.Response:
    return await client.post(
        f"{API}/competitions/{cid}/participants/{user}/{action}", json=body, headers=headers(who)
    )


async def decide(
    client: httpx.AsyncClient, cid: str, user: str, action: str, reason: str, who: str = "org"
) -> dict[str, Any]:
    resp = await decide_raw(client, cid, user, action, {"reason": reason}, who)
    assert resp.status_code == 200, resp.text
    data: dict[str, Any] = resp.json()["data"]
    return data


async def payouts(client: httpx.AsyncClient, cid: str, who: str = "org") -> dict[str, int]:
    resp = await client.post(f"{API}/prizes/calculate/{cid}", headers=headers(who))
    assert resp.status_code == 200, resp.text
    data = resp.json()["data"]
    assert data["pool_cents"] == POOL
    return {p["user_id"]: p["amount_cents"] for p in data["prizes"]}


async def audit(client: httpx.AsyncClient, cid: str, who: str = "org") -> list[dict[str, Any]]:
    resp = await client.get(f"{API}/competitions/{cid}/audit", headers=headers(who))
    assert resp.status_code == 200, resp.text
    records: list[dict[str, Any]] = resp.json()["data"]["records"]
    return records


async def field_day(client: httpx.AsyncClient, cid: str, day: str) -> dict[str, Any]:
    resp = await client.get(f"{API}/fitness/analytics/{cid}", headers=auth("org"))
    assert resp.status_code == 200, resp.text
    found: list[dict[str, Any]] = [d for d in resp.json()["data"]["days"] if d["date"] == day]
    assert len(found) == 1, day
    return found[0]


async def the_flag_in(client: httpx.AsyncClient, cid: str, state: str) -> dict[str, Any]:
    page = await flags(client, cid, state=state)
    assert page["total"] == 1, page
    found: dict[str, Any] = page["flags"][0]
    return found


async def the_flag(client: httpx.AsyncClient, cid: str, who: str = "org") -> dict[str, Any]:
    page = await flags(client, cid, who, state="open")
    assert page["total"] == 1, page
    flag: dict[str, Any] = page["flags"][0]
    return flag


# Standings (user, rank, score) and the 60/30/10 split of the pool, before and after.
WITH_CHEAT = [("cheat", 1, CHEAT_SCORE), ("a", 2, 100_000), ("b", 3, 90_000), ("c", 4, 85_000)]
WITHOUT_CHEAT_DAY = [("a", 1, 100_000), ("b", 2, 90_000), ("c", 3, 85_000), ("cheat", 4, IN_WINDOW)]
PAID_WITH_CHEAT = {"cheat": 5_400, "a": 2_700, "b": 900}
PAID_HONESTLY = {"a": 5_400, "b": 2_700, "c": 900}


# --- the organizer's path ----------------------------------------------------------------


async def test_the_organizer_finds_the_day_excludes_it_and_restores_it(
    client: httpx.AsyncClient,
) -> None:
    await plant(client, "fp")
    assert await standings(client, "fp") == WITH_CHEAT
    assert await payouts(client, "fp") == PAID_WITH_CHEAT

    # The organizer finds it: one open flag, the cheater's day, far above their history.
    page = await flags(client, "fp", state="open")
    assert (page["scope"], page["total"], page["counts"]) == (
        "all", 1, {"open": 1, "dismissed": 0, "excluded": 0},
    )  # fmt: skip
    assert page["disqualified"] == []
    flag = page["flags"][0]
    assert (flag["competition_id"], flag["user_id"], flag["date"], flag["state"]) == (
        "fp", "cheat", CHEAT_DAY, "open",
    )  # fmt: skip
    assert flag["id"].isdigit() and flag["metric"] == "steps"
    assert flag["value"] == CHEAT_STEPS and flag["counted"]["steps"] == CHEAT_STEPS
    kinds = {k["kind"]: k for k in flag["kinds"]}
    assert "own_history" in kinds, flag["kinds"]
    assert kinds["own_history"]["metric"] == "steps"
    assert 7_000 <= kinds["own_history"]["typical"] <= 9_000  # their median
    assert flag["reviews"] == 0 and flag["last_review"] is None
    # The full analytics count it too.
    resp = await client.get(f"{API}/fitness/analytics/fp", headers=auth("org"))
    counts = resp.json()["data"]["flags"]
    assert (counts["total"], counts["open"], counts["open_by_kind"]["own_history"]) == (1, 1, 1)

    day = await field_day(client, "fp", CHEAT_DAY)
    assert (day["active_participants"], day["total"], day["median"]) == (4, 122_500, 9_500)

    # Exclude it: the cheater drops to fourth, out of the money.
    done = await review(client, "fp", flag["id"], "exclude", "95k steps in a day, 8k usual")
    assert done["changed"] is True and done["flag"]["state"] == "excluded"
    assert done["participant"] == {"user_id": "cheat", "score": IN_WINDOW, "rank": 4}
    assert done["flag"]["reviews"] == 1
    last = done["flag"]["last_review"]
    assert (last["by"], last["reason"]) == ("org", "95k steps in a day, 8k usual")
    assert last["at"].endswith("Z")
    assert await standings(client, "fp") == WITHOUT_CHEAT_DAY
    assert await payouts(client, "fp") == PAID_HONESTLY
    assert await payouts(client, "fp", "cheat") == PAID_HONESTLY
    # The field of that day no longer holds it either.
    day = await field_day(client, "fp", CHEAT_DAY)
    assert (day["active_participants"], day["total"], day["median"]) == (3, 27_500, 9_000)
    board = (await client.get(f"{API}/leaderboard/fp", headers=auth("org"))).json()["data"]
    assert board["event_id"] == done["event_id"]
    # The day stays stored (the flag says what it holds), it just does not count.
    page = await flags(client, "fp")
    assert page["counts"] == {"open": 0, "dismissed": 0, "excluded": 1}
    assert page["flags"][0]["counted"]["steps"] == CHEAT_STEPS
    assert (await flags(client, "fp", state="open"))["total"] == 0
    assert (await flags(client, "fp", state="excluded"))["flags"][0]["id"] == flag["id"]

    # Audited: who, when, what, why.
    (record,) = [r for r in await audit(client, "fp") if r["action"] == "exclude"]
    assert (record["by"], record["user_id"], record["reason"]) == (
        "org", "cheat", "95k steps in a day, 8k usual",
    )  # fmt: skip
    assert (record["day"], record["flag_id"]) == (CHEAT_DAY, flag["id"])
    assert (record["score_before"], record["score_after"]) == (CHEAT_SCORE, IN_WINDOW)
    assert record["at"].endswith("Z") and record["event_id"] == done["event_id"]
    # The cheater reads the records about themself.
    assert [r["action"] for r in await audit(client, "fp", "cheat")] == ["exclude"]
    assert [r["action"] for r in await audit(client, "fp", "a")] == []

    # The same decision again: nothing changes.
    again = await review(client, "fp", flag["id"], "exclude", "still")
    assert again["changed"] is False and again["flag"]["state"] == "excluded"
    assert await standings(client, "fp") == WITHOUT_CHEAT_DAY
    assert len([r for r in await audit(client, "fp") if r["action"] == "exclude"]) == 1

    # Restore: counted again, the flag open for review; ranks and payouts as before.
    back = await review(client, "fp", flag["id"], "restore", "the wearable's log checks out")
    assert back["changed"] is True and back["flag"]["state"] == "open"
    assert back["participant"] == {"user_id": "cheat", "score": CHEAT_SCORE, "rank": 1}
    assert await standings(client, "fp") == WITH_CHEAT
    assert await payouts(client, "fp") == PAID_WITH_CHEAT
    assert (await review(client, "fp", flag["id"], "restore", "again"))["changed"] is False

    # Dismiss: the day counts, the flag is closed; dismissing twice changes nothing.
    kept = await review(client, "fp", flag["id"], "dismiss", "verified with the user")
    assert kept["changed"] is True and kept["flag"]["state"] == "dismissed"
    assert kept["participant"]["rank"] == 1 and kept["flag"]["reviews"] == 3
    assert await standings(client, "fp") == WITH_CHEAT
    assert (await flags(client, "fp"))["counts"] == {"open": 0, "dismissed": 1, "excluded": 0}
    assert (await review(client, "fp", flag["id"], "dismiss", "again"))["changed"] is False
    # A dismissed flag can still be excluded.
    out = await review(client, "fp", flag["id"], "exclude", "changed my mind", "service")
    assert out["changed"] is True and out["participant"]["rank"] == 4
    assert out["flag"]["last_review"]["by"] == "service"
    assert [r["action"] for r in await audit(client, "fp")] == [
        "exclude", "restore", "dismiss", "exclude",
    ]  # fmt: skip
    counts = (await client.get(f"{API}/fitness/analytics/fp", headers=SERVICE_AUTH)).json()
    assert counts["data"]["flags"]["excluded"] == 1 and counts["data"]["flags"]["open"] == 0


async def test_flags_are_paginated_newest_first(client: httpx.AsyncClient) -> None:
    await plant(client, "pg")
    # A second flag: 40 km from 2,000 steps (a stride no human has).
    await sync(client, "a", rec("2026-11-09", 2_000, distance=40_000, active_minutes=60))
    page = await flags(client, "pg")
    assert page["total"] == 2 and page["counts"]["open"] == 2
    newest, oldest = page["flags"]
    assert (newest["user_id"], newest["date"]) == ("a", "2026-11-09")
    assert "stride" in {k["kind"] for k in newest["kinds"]}
    assert int(newest["id"]) > int(oldest["id"]) and oldest["user_id"] == "cheat"
    one = await flags(client, "pg", limit=1, offset=1)
    assert (one["total"], one["limit"], one["offset"]) == (2, 1, 1)
    assert [f["id"] for f in one["flags"]] == [oldest["id"]]
    assert (await flags(client, "pg", offset=5))["flags"] == []
    for params in ({"limit": 0}, {"limit": 101}, {"offset": -1}, {"state": "closed"}):
        resp = await client.get(f"{API}/competitions/pg/flags", params=params, headers=auth("org"))
        assert_error(resp, 422, "validation_error")


# --- disqualification ------------------------------------------------------------------


async def test_disqualify_and_reinstate(client: httpx.AsyncClient) -> None:
    await plant(client, "dq")
    done = await decide(client, "dq", "cheat", "disqualify", "three impossible days")
    assert done == {
        "competition_id": "dq", "user_id": "cheat", "disqualified": True, "changed": True,
        "score": CHEAT_SCORE, "rank": None, "event_id": done["event_id"],
    }  # fmt: skip
    # Off the board and out of the money.
    assert await standings(client, "dq") == [("a", 1, 100_000), ("b", 2, 90_000), ("c", 3, 85_000)]
    board = (await client.get(f"{API}/leaderboard/dq", headers=auth("org"))).json()["data"]
    assert board["total_count"] == 3 and board["event_id"] == done["event_id"]
    assert await payouts(client, "dq") == PAID_HONESTLY
    # Out of the field too, and listed apart in the analytics.
    day = await field_day(client, "dq", CHEAT_DAY)
    assert (day["active_participants"], day["total"]) == (3, 27_500)
    resp = await client.get(f"{API}/fitness/analytics/dq", headers=auth("org"))
    analytics = resp.json()["data"]
    assert analytics["participants"] == 3
    assert "cheat" not in {s["user_id"] for s in analytics["leaders"]}
    assert [(d["user_id"], d["score"]) for d in analytics["disqualified"]] == [
        ("cheat", CHEAT_SCORE)
    ]
    # Still listed to the organizer, with who, when and why.
    (listed,) = (await flags(client, "dq"))["disqualified"]
    assert (listed["user_id"], listed["by"], listed["reason"]) == (
        "cheat", "org", "three impossible days",
    )  # fmt: skip
    assert listed["at"].endswith("Z")
    assert (await flags(client, "dq", "service"))["disqualified"] == [listed]
    # The user sees their own standing, with no rank.
    mine = (await client.get(f"{API}/users/cheat/competitions", headers=auth("cheat"))).json()
    (standing,) = mine["data"]["competitions"]
    assert (standing["score"], standing["rank"], standing["disqualified"]) == (
        CHEAT_SCORE, None, True,
    )  # fmt: skip
    board = (await client.get(f"{API}/leaderboard/dq", headers=auth("cheat"))).json()["data"]
    assert board["me"] is None and "cheat" not in {e["user_id"] for e in board["entries"]}
    # A later sync is kept but ranks nobody.
    result = await sync(client, "cheat", walk("2026-11-09", 8_400))
    (comp,) = result["competitions"]
    assert comp["rank"] is None and comp["previous_rank"] is None
    score = comp["score"]
    assert score == CHEAT_SCORE + 8_400 - WALKED["2026-11-09"]
    again = await decide(client, "dq", "cheat", "disqualify", "again")
    assert again["changed"] is False and again["rank"] is None

    # Reinstated: back on the board at the score, in the money again.
    back = await decide(client, "dq", "cheat", "reinstate", "appeal upheld", "service")
    assert (back["disqualified"], back["changed"], back["score"], back["rank"]) == (
        False, True, score, 1,
    )  # fmt: skip
    assert await standings(client, "dq") == [
        ("cheat", 1, score), ("a", 2, 100_000), ("b", 3, 90_000), ("c", 4, 85_000),
    ]  # fmt: skip
    assert await payouts(client, "dq") == {"cheat": 5_400, "a": 2_700, "b": 900}
    assert (await flags(client, "dq"))["disqualified"] == []
    assert (await decide(client, "dq", "cheat", "reinstate", "again"))["changed"] is False
    records = [r for r in await audit(client, "dq") if r["action"] in {"disqualify", "reinstate"}]
    assert [(r["action"], r["by"], r["user_id"], r["reason"]) for r in records] == [
        ("disqualify", "org", "cheat", "three impossible days"),
        ("reinstate", "service", "cheat", "appeal upheld"),
    ]
    assert all(r["at"].endswith("Z") for r in records)


async def test_an_exclusion_holds_through_disqualification_and_rejoining(
    client: httpx.AsyncClient,
) -> None:
    await plant(client, "keep")
    flag_id = (await the_flag(client, "keep"))["id"]
    await decide(client, "keep", "cheat", "disqualify", "first")
    done = await review(client, "keep", flag_id, "exclude", "while disqualified")
    assert done["participant"] == {"user_id": "cheat", "score": IN_WINDOW, "rank": None}
    back = await decide(client, "keep", "cheat", "reinstate", "served")
    assert (back["score"], back["rank"]) == (IN_WINDOW, 4)
    assert await standings(client, "keep") == WITHOUT_CHEAT_DAY
    # Leaving and joining again brings the days back, but not the excluded one.
    for step in ("leave", "join"):
        resp = await client.post(f"{API}/competitions/keep/{step}", headers=auth("cheat"))
        assert resp.status_code == 200, resp.text
    assert await standings(client, "keep") == WITHOUT_CHEAT_DAY
    assert await payouts(client, "keep") == PAID_HONESTLY
    assert (await the_flag_in(client, "keep", "excluded"))["id"] == flag_id


async def test_a_trusted_write_on_a_disqualified_entry_is_refused_in_the_envelope(
    client: httpx.AsyncClient,
) -> None:
    await plant(client, "tw")
    await decide(client, "tw", "a", "disqualify", "shared account")
    body = {"user_id": "a", "competition_id": "tw", "steps": 1, "distance": 0, "calories": 0}
    resp = await client.post(f"{API}/leaderboard/update", json=body, headers=SERVICE_AUTH)
    # Refused (the entry is off the board), as a client error, never a 500.
    assert resp.status_code in (403, 409), resp.text
    assert_error(resp, resp.status_code)
    assert (await decide(client, "tw", "a", "reinstate", "ok"))["score"] == 100_000


# --- what a participant sees -------------------------------------------------------------


async def test_a_participant_sees_only_their_own_flags(client: httpx.AsyncClient) -> None:
    await plant(client, "own")
    flag = await the_flag(client, "own")
    await review(client, "own", flag["id"], "exclude", "impossible day")
    mine = await flags(client, "own", "cheat")
    assert (mine["scope"], mine["total"], mine["disqualified"]) == ("own", 1, [])
    assert mine["counts"] == {"open": 0, "dismissed": 0, "excluded": 1}
    (seen,) = mine["flags"]
    assert (seen["id"], seen["state"], seen["date"]) == (flag["id"], "excluded", CHEAT_DAY)
    assert seen["last_review"]["reason"] == "impossible day"
    await decide(client, "own", "b", "disqualify", "to see it is not shown to others")
    for other in ("a", "b"):
        theirs = await flags(client, "own", other)
        assert (theirs["scope"], theirs["total"], theirs["flags"]) == ("own", 0, [])
        assert theirs["counts"] == {"open": 0, "dismissed": 0, "excluded": 0}
        assert theirs["disqualified"] == []
    # The organizer and the service role see everything.
    assert (await flags(client, "own"))["scope"] == "all"
    assert (await flags(client, "own", "service"))["total"] == 1


# --- refusals --------------------------------------------------------------------------


async def test_who_may_review(client: httpx.AsyncClient) -> None:
    await plant(client, "who")
    flag_id = (await the_flag(client, "who"))["id"]
    body = {"action": "exclude", "reason": "x"}
    reason = {"reason": "x"}
    base = f"{API}/competitions/who"
    # No token.
    assert_error(await client.get(f"{base}/flags"), 401)
    assert_error(await client.post(f"{base}/flags/{flag_id}", json=body), 401)
    assert_error(await client.post(f"{base}/participants/cheat/disqualify", json=reason), 401)
    assert_error(await client.post(f"{base}/participants/cheat/reinstate", json=reason), 401)
    # A participant: may list (their own), not decide.
    for who in ("a", "cheat"):
        assert_error(await review_raw(client, "who", flag_id, body, who), 403, "not_organizer")
        for action in ("disqualify", "reinstate"):
            resp = await decide_raw(client, "who", "cheat", action, reason, who)
            assert_error(resp, 403, "not_organizer")
    # A stranger on a private competition: the unknown-id 404, for everything.
    assert_error(
        await client.get(f"{base}/flags", headers=auth("stranger")), 404, "competition_not_found"
    )
    resp = await review_raw(client, "who", flag_id, body, "stranger")
    assert_error(resp, 404, "competition_not_found")
    resp = await decide_raw(client, "who", "cheat", "disqualify", reason, "stranger")
    assert_error(resp, 404, "competition_not_found")
    # Nothing of that changed anything.
    assert (await the_flag(client, "who"))["reviews"] == 0
    assert (await flags(client, "who"))["disqualified"] == []


async def test_a_public_competition_is_no_more_open_to_review(client: httpx.AsyncClient) -> None:
    await create_comp(client, "pub", visibility="public")
    await join(client, "pub", "a")
    base = f"{API}/competitions/pub"
    resp = await client.get(f"{base}/flags", headers=auth("stranger"))
    assert_error(resp, 403, "not_participant")
    resp = await review_raw(client, "pub", "1", {"action": "dismiss", "reason": "x"}, "stranger")
    assert_error(resp, 403, "not_organizer")
    resp = await decide_raw(client, "pub", "a", "disqualify", {"reason": "x"}, "stranger")
    assert_error(resp, 403, "not_organizer")


async def test_an_organizer_cannot_review_their_own_entry(client: httpx.AsyncClient) -> None:
    await plant(client, "self", cheat="org")  # the organizer competes, and cheats
    flag = await the_flag(client, "self")
    assert flag["user_id"] == "org"
    for action in ("exclude", "dismiss", "restore"):
        resp = await review_raw(client, "self", flag["id"], {"action": action, "reason": "mine"})
        assert_error(resp, 403, "own_entry")
    for action in ("disqualify", "reinstate"):
        resp = await decide_raw(client, "self", "org", action, {"reason": "mine"})
        assert_error(resp, 403, "own_entry")
    assert (await the_flag(client, "self"))["reviews"] == 0
    # The service role may.
    done = await review(client, "self", flag["id"], "exclude", "organizer's own day", "service")
    assert done["changed"] is True and done["participant"]["rank"] == 4
    assert (await standings(client, "self"))[-1] == ("org", 4, IN_WINDOW)
    dq = await decide(client, "self", "org", "disqualify", "organizer cheated", "service")
    assert dq["changed"] is True and dq["rank"] is None
    # The organizer still runs the rest of the competition.
    assert (await decide(client, "self", "a", "disqualify", "not own"))["changed"] is True


@pytest.mark.parametrize(
    "body",
    [
        {"action": "delete", "reason": "x"},
        {"action": "EXCLUDE", "reason": "x"},
        {"action": "exclude", "reason": ""},
        {"action": "exclude"},
        {"reason": "x"},
        {"action": "exclude", "reason": "x", "user_id": "a"},
        {"action": "exclude", "reason": "x" * 501},
        {"action": 1, "reason": "x"},
        {"action": "exclude", "reason": 5},
        ["exclude", "x"],
        None,
    ],
)
async def test_a_malformed_review_is_422(client: httpx.AsyncClient, body: Any) -> None:
    await plant(client, "bad")
    flag_id = (await the_flag(client, "bad"))["id"]
    assert_error(await review_raw(client, "bad", flag_id, body), 422, "validation_error")
    assert (await the_flag(client, "bad"))["reviews"] == 0


async def test_refusals_of_the_review_routes(client: httpx.AsyncClient) -> None:
    await plant(client, "ref")
    flag_id = (await the_flag(client, "ref"))["id"]
    body = {"action": "exclude", "reason": "x"}
    # Flag ids are digits.
    for bad in ("abc", "1a", "-1", "1.0", "1" * 19):
        resp = await review_raw(client, "ref", bad, body)
        assert_error(resp, 422, "validation_error")
    # Unknown flag, participant, competition.
    assert_error(await review_raw(client, "ref", "999", body), 404, "flag_not_found")
    assert_error(await review_raw(client, "ref", "0", body, "service"), 404, "flag_not_found")
    for action in ("disqualify", "reinstate"):
        resp = await decide_raw(client, "ref", "ghost", action, {"reason": "x"})
        assert_error(resp, 404, "participant_not_found")
        resp = await decide_raw(client, "nope", "a", action, {"reason": "x"}, "service")
        assert_error(resp, 404, "competition_not_found")
        resp = await decide_raw(client, "ref", "a:b", action, {"reason": "x"})
        assert_error(resp, 422, "validation_error")
    assert_error(await review_raw(client, "nope", flag_id, body), 404, "competition_not_found")
    resp = await client.get(f"{API}/competitions/nope/flags", headers=SERVICE_AUTH)
    assert_error(resp, 404, "competition_not_found")
    assert_error(await review_raw(client, "bad:id", flag_id, body), 422, "validation_error")
    # Decision bodies: a reason, and nothing else.
    for bad_body in ({}, {"reason": ""}, {"reason": "x", "action": "disqualify"}, None):
        resp = await decide_raw(client, "ref", "a", "disqualify", bad_body)
        assert_error(resp, 422, "validation_error")
    # A participant who left is no longer one.
    resp = await client.post(f"{API}/competitions/ref/leave", headers=auth("c"))
    assert resp.status_code == 200, resp.text
    resp = await decide_raw(client, "ref", "c", "disqualify", {"reason": "x"})
    assert_error(resp, 404, "participant_not_found")
    # None of it changed anything.
    assert (await the_flag(client, "ref"))["reviews"] == 0
    assert [r["action"] for r in await audit(client, "ref")] == []


@pytest.mark.parametrize("closing", ["distribute", "cancel"])
async def test_nothing_changes_after_the_competition_closes(
    client: httpx.AsyncClient, closing: str
) -> None:
    await plant(client, "shut")
    flag_id = (await the_flag(client, "shut"))["id"]
    await decide(client, "shut", "c", "disqualify", "before the close")
    if closing == "distribute":
        app_clock(client).at = at(2026, 12, 5)  # past the grace period
        resp = await client.post(f"{API}/prizes/distribute/shut", headers=auth("org"))
        assert resp.status_code == 200, resp.text
        assert resp.json()["data"]["final"] is True
    else:
        resp = await client.post(
            f"{API}/competitions/shut/cancel", json={"reason": "venue"}, headers=auth("org")
        )
        assert resp.status_code == 200, resp.text
    before = await standings(client, "shut")
    for who in ("org", "service"):
        for action in ("exclude", "dismiss", "restore"):
            resp = await review_raw(client, "shut", flag_id, {"action": action, "reason": "x"}, who)
            assert_error(resp, 409, "competition_closed")
        for user in ("cheat", "a"):
            resp = await decide_raw(client, "shut", user, "disqualify", {"reason": "x"}, who)
            assert_error(resp, 409, "competition_closed")
        resp = await decide_raw(client, "shut", "c", "reinstate", {"reason": "x"}, who)
        assert_error(resp, 409, "competition_closed")
    assert await standings(client, "shut") == before
    # Still readable.
    resp = await client.get(f"{API}/fitness/analytics/shut", headers=auth("org"))
    assert resp.status_code == 200, resp.text
    data = resp.json()["data"]
    assert data["status"] == ("finalized" if closing == "distribute" else "cancelled")
    assert [(d["user_id"]) for d in data["disqualified"]] == ["c"]
    page = await flags(client, "shut")  # still listed
    assert page["counts"]["open"] == 1 and [d["user_id"] for d in page["disqualified"]] == ["c"]


async def test_the_responses_match_the_openapi_schema(client: httpx.AsyncClient) -> None:
    """What a schema-driven client relies on (SPEC §4), for the analytics and review
    routes and the standings a disqualification changes."""
    checker = Checker((await client.get("/openapi.json")).json())
    await plant(client, "oa")
    flag_id = (await the_flag(client, "oa"))["id"]
    calls: list[tuple[str, str, dict[str, str], Any]] = [
        ("GET", f"{API}/fitness/analytics/oa", auth("org"), None),
        ("GET", f"{API}/fitness/analytics/oa?limit=2", auth("cheat"), None),
        ("GET", f"{API}/competitions/oa/flags?state=open", auth("org"), None),
        ("GET", f"{API}/competitions/oa/flags", auth("cheat"), None),
        ("POST", f"{API}/competitions/oa/flags/{flag_id}", auth("org"),
         {"action": "exclude", "reason": "r"}),
        ("POST", f"{API}/competitions/oa/flags/{flag_id}", auth("org"),
         {"action": "exclude", "reason": "r"}),
        ("POST", f"{API}/competitions/oa/participants/b/disqualify", auth("org"), {"reason": "r"}),
        ("GET", f"{API}/fitness/stats/b?competition_id=oa", auth("b"), None),
        ("GET", f"{API}/fitness/stats/a?competition_id=oa", auth("a"), None),
        ("GET", f"{API}/users/b/competitions", auth("b"), None),
        ("POST", f"{API}/fitness/sync", auth("b"), {"date": "2026-11-10", "steps": 9100}),
        ("GET", f"{API}/fitness/analytics/oa", SERVICE_AUTH, None),
        ("GET", f"{API}/leaderboard/oa", auth("b"), None),
        ("POST", f"{API}/competitions/oa/participants/b/reinstate", SERVICE_AUTH, {"reason": "r"}),
        # Refusals: the declared envelope.
        ("GET", f"{API}/fitness/analytics/oa?limit=0", auth("a"), None),
        ("GET", f"{API}/fitness/analytics/oa", {}, None),
        ("GET", f"{API}/fitness/analytics/nope", auth("a"), None),
        ("POST", f"{API}/competitions/oa/flags/x1", auth("org"), {"action": "exclude"}),
        ("POST", f"{API}/competitions/oa/flags/999", auth("org"),
         {"action": "exclude", "reason": "r"}),
        ("POST", f"{API}/competitions/oa/flags/{flag_id}", auth("a"),
         {"action": "exclude", "reason": "r"}),
        ("POST", f"{API}/competitions/oa/participants/ghost/disqualify", auth("org"),
         {"reason": "r"}),
    ]  # fmt: skip
    for method, url, hdrs, body in calls:
        resp = await client.request(method, url, headers=hdrs, json=body)
        assert resp.status_code < 500, (method, url, resp.text)
        checker.check(resp)
    assert checker.checked == len(calls)
