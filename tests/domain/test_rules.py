"""Trusted writes, the audit trail, cancel, max_participants under races and the
participation records (SPEC §6.2, §6.3, issue #6)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from healthcomp.core.clock import FixedClock, from_ms, to_ms
from healthcomp.core.context import AppContext
from healthcomp.engine import reads, sweep, writes
from healthcomp.engine.codes import Reply
from tests.conftest import SERVICE_AUTH, assert_error, auth
from tests.domain.helpers import API, at, board, create_comp, join, rec, standings, sync

UPDATE = f"{API}/leaderboard/update"


def _write(user: str, cid: str = "c", **values: Any) -> dict[str, Any]:
    return {"user_id": user, "competition_id": cid, **values}


async def _audit(client: httpx.AsyncClient, headers: dict[str, str], cid: str = "c") -> Any:
    resp = await client.get(f"{API}/competitions/{cid}/audit", headers=headers)
    assert resp.status_code == 200, resp.text
    data = resp.json()["data"]
    assert data["competition_id"] == cid
    return data["records"]


# --- trusted writes ----------------------------------------------------------------------


async def test_organizer_cannot_set_own_entry(client: httpx.AsyncClient) -> None:
    await create_comp(client, "c")
    await join(client, "c", "org", "a")
    await sync(client, "org", rec("2026-11-02", 100))
    resp = await client.post(UPDATE, json=_write("org", steps=99_999), headers=auth("org"))
    assert_error(resp, 403, "own_entry")
    assert await standings(client, "c") == [("org", 1, 100), ("a", 2, 0)]
    # Another participant's entry: yes. The service role: also the organizer's.
    resp = await client.post(UPDATE, json=_write("a", steps=50), headers=auth("org"))
    assert resp.status_code == 200, resp.text
    resp = await client.post(UPDATE, json=_write("org", steps=40), headers=SERVICE_AUTH)
    assert resp.status_code == 200, resp.text
    assert resp.json()["data"]["entry"]["score"] == 40
    assert await standings(client, "c") == [("a", 1, 50), ("org", 2, 40)]
    # A participant is not the organizer: 403, whoever's entry.
    for user in ("a", "org"):
        resp = await client.post(UPDATE, json=_write(user, steps=1), headers=auth("a"))
        assert_error(resp, 403, "not_organizer")
    # An outsider of a private competition learns nothing.
    resp = await client.post(UPDATE, json=_write("a", steps=1), headers=auth("stranger"))
    assert_error(resp, 404, "competition_not_found")
    assert await standings(client, "c") == [("a", 1, 50), ("org", 2, 40)]


async def test_with_money_only_the_service_writes(client: httpx.AsyncClient) -> None:
    await create_comp(client, "fee", entry_fee_cents=500)
    await create_comp(client, "pool", prize_pool_cents=10_000)
    await create_comp(client, "free")
    for cid in ("fee", "pool", "free"):
        await join(client, cid, "a")
    await sync(client, "a", rec("2026-11-02", 1000))
    for cid in ("fee", "pool"):
        resp = await client.post(UPDATE, json=_write("a", cid, steps=0), headers=auth("org"))
        assert_error(resp, 403, "service_only")
        assert await standings(client, cid) == [("a", 1, 1000)]
        resp = await client.post(UPDATE, json=_write("a", cid, steps=7), headers=SERVICE_AUTH)
        assert resp.status_code == 200, resp.text
        assert await standings(client, cid) == [("a", 1, 7)]
    resp = await client.post(UPDATE, json=_write("a", "free", steps=3), headers=auth("org"))
    assert resp.status_code == 200, resp.text
    assert await standings(client, "free") == [("a", 1, 3)]


async def test_after_the_deadline_only_the_service_writes(
    client: httpx.AsyncClient, clock: FixedClock
) -> None:
    await create_comp(client, "c")  # ends 2026-12-01 12:00 UTC; deadline 24 h later
    await join(client, "c", "a")
    await sync(client, "a", rec("2026-11-02", 1000))
    clock.at = at(2026, 12, 2, 12)  # the last instant of the grace period
    resp = await client.post(UPDATE, json=_write("a", steps=10), headers=auth("org"))
    assert resp.status_code == 200, resp.text
    clock.advance(seconds=1)
    resp = await client.post(UPDATE, json=_write("a", steps=20), headers=auth("org"))
    assert_error(resp, 403, "service_only")
    assert await standings(client, "c") == [("a", 1, 10)]
    resp = await client.post(UPDATE, json=_write("a", steps=30), headers=SERVICE_AUTH)
    assert resp.status_code == 200, resp.text
    assert await standings(client, "c") == [("a", 1, 30)]


async def test_after_cancel_nobody_writes(client: httpx.AsyncClient) -> None:
    await create_comp(client, "c")
    await join(client, "c", "a")
    resp = await client.post(f"{API}/competitions/c/cancel", headers=auth("org"))
    assert resp.status_code == 200, resp.text
    for headers in (auth("org"), SERVICE_AUTH):
        resp = await client.post(UPDATE, json=_write("a", steps=10), headers=headers)
        assert_error(resp, 409, "competition_closed")
    assert await standings(client, "c") == [("a", 1, 0)]


async def test_goal_competition_write_sets_goal_days(client: httpx.AsyncClient) -> None:
    await create_comp(
        client, "g", format="goal", goal={"daily_target": 5000, "min_days": 2}, max_participants=9
    )
    await create_comp(client, "r")
    await join(client, "g", "a", "b")
    await join(client, "r", "a")
    await sync(
        client, "a", rec("2026-11-02", 6000), rec("2026-11-03", 4999), rec("2026-11-04", 5000)
    )
    assert await standings(client, "g") == [("a", 1, 2), ("b", 2, 0)]

    resp = await client.post(UPDATE, json=_write("a", "g", steps=1), headers=auth("org"))
    body = assert_error(resp, 422, "validation_error")
    assert [d["field"] for d in body["details"]] == ["goal_days"]
    resp = await client.post(UPDATE, json=_write("a", "r", goal_days=3), headers=SERVICE_AUTH)
    body = assert_error(resp, 422, "validation_error")
    assert [d["field"] for d in body["details"]] == ["goal_days"]
    assert await standings(client, "g") == [("a", 1, 2), ("b", 2, 0)]

    resp = await client.post(UPDATE, json=_write("b", "g", goal_days=5), headers=auth("org"))
    assert resp.status_code == 200, resp.text
    data = resp.json()["data"]
    assert (data["entry"]["score"], data["entry"]["rank"], data["previous_rank"]) == (5, 1, 2)
    assert (data["before"]["goal_days"], data["after"]["goal_days"]) == (0, 5)
    assert await standings(client, "g") == [("b", 1, 5), ("a", 2, 2)]
    # Later days met count on top of the adjustment.
    await sync(client, "b", rec("2026-11-05", 5000), rec("2026-11-06", 100))
    assert await standings(client, "g") == [("b", 1, 6), ("a", 2, 2)]
    # Setting it below what the activity gives is kept too.
    resp = await client.post(UPDATE, json=_write("a", "g", goal_days=0), headers=SERVICE_AUTH)
    assert resp.json()["data"]["entry"]["score"] == 0
    await sync(client, "a", rec("2026-11-07", 9000))
    assert await standings(client, "g") == [("b", 1, 6), ("a", 2, 1)]


async def test_adjustment_survives_leave_and_rejoin(client: httpx.AsyncClient) -> None:
    await create_comp(client, "c")
    await join(client, "c", "a", "b")
    await sync(client, "a", *(rec(f"2026-11-0{d}", 100_000) for d in range(1, 6)))
    await sync(client, "b", rec("2026-11-02", 10))
    assert await standings(client, "c") == [("a", 1, 500_000), ("b", 2, 10)]
    resp = await client.post(
        UPDATE, json=_write("a", steps=0, reason="implausible"), headers=auth("org")
    )
    assert resp.status_code == 200, resp.text
    assert await standings(client, "c") == [("b", 1, 10), ("a", 2, 0)]

    resp = await client.post(f"{API}/competitions/c/leave", headers=auth("a"))
    assert resp.status_code == 200, resp.text
    assert await standings(client, "c") == [("b", 1, 10)]
    await join(client, "c", "a")
    assert await standings(client, "c") == [("b", 1, 10), ("a", 2, 0)]
    # New activity still counts on top.
    await sync(client, "a", rec("2026-11-06", 25))
    assert await standings(client, "c") == [("a", 1, 25), ("b", 2, 10)]
    me = (await board(client, "c", "a"))["me"]
    assert (me["score"], me["steps"]) == (25, 25)


async def test_audit_route(client: httpx.AsyncClient, clock: FixedClock) -> None:
    await create_comp(client, "c")
    await join(client, "c", "a", "b")
    await sync(client, "a", rec("2026-11-02", 800))
    start_ms = to_ms(clock.at)
    resp = await client.post(
        UPDATE, json=_write("a", steps=500, reason="double count"), headers=auth("org")
    )
    assert resp.status_code == 200, resp.text
    clock.advance(seconds=5)
    resp = await client.post(UPDATE, json=_write("b", steps=70), headers=SERVICE_AUTH)
    assert resp.status_code == 200, resp.text

    everything = await _audit(client, auth("org"))
    assert await _audit(client, SERVICE_AUTH) == everything
    assert [(r["action"], r["by"], r["user_id"]) for r in everything] == [
        ("set_totals", "org", "a"),
        ("set_totals", "service", "b"),
    ]
    first = everything[0]
    assert first["at"] == from_ms(start_ms)
    assert everything[1]["at"] == from_ms(start_ms + 5000)
    assert first["reason"] == "double count"
    assert first["before"] == [800, 0, 0, 0, 0] and first["after"] == [500, 0, 0, 0, 0]
    assert (first["score_before"], first["score_after"]) == (800, 500)
    assert everything[1]["reason"] == "trusted score write"

    assert await _audit(client, auth("a")) == [first]
    assert await _audit(client, auth("b")) == [everything[1]]
    await join(client, "c", "quiet")
    assert await _audit(client, auth("quiet")) == []
    resp = await client.get(f"{API}/competitions/c/audit", headers=auth("outsider"))
    assert_error(resp, 404, "competition_not_found")

    # A cancel is on the trail for the organizer and the service, not for participants.
    resp = await client.post(
        f"{API}/competitions/c/cancel", json={"reason": "venue closed"}, headers=auth("org")
    )
    assert resp.status_code == 200, resp.text
    log = await _audit(client, SERVICE_AUTH)
    assert log[:2] == everything and len(log) == 3
    assert (log[2]["action"], log[2]["by"], log[2]["reason"]) == ("cancel", "org", "venue closed")
    assert await _audit(client, auth("a")) == [first]


# --- cancel --------------------------------------------------------------------------------


async def test_cancel_before_and_after_the_end(
    client: httpx.AsyncClient, clock: FixedClock
) -> None:
    await create_comp(client, "early", start_date="2026-11-05", end_date="2026-11-20")
    await create_comp(client, "late", start_date="2026-11-05", end_date="2026-11-20")
    await create_comp(
        client, "paid", start_date="2026-11-05", end_date="2026-11-20", entry_fee_cents=1000
    )
    # 2026-11-20 is over everywhere at 2026-11-21 12:00 UTC.
    clock.at = at(2026, 11, 21, 11, 59)
    resp = await client.post(
        f"{API}/competitions/early/cancel", json={"reason": "too few"}, headers=auth("org")
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["data"]["status"] == "cancelled"
    clock.at = at(2026, 11, 21, 12)
    for cid in ("late", "paid"):
        resp = await client.post(f"{API}/competitions/{cid}/cancel", headers=auth("org"))
        assert_error(resp, 409, "competition_ended")
        got = await client.get(f"{API}/competitions/{cid}", headers=auth("org"))
        assert got.json()["data"]["status"] == "ended"
    # The service role cancels until finalization, also in the grace period and after.
    resp = await client.post(
        f"{API}/competitions/late/cancel", json={"reason": "fraud"}, headers=SERVICE_AUTH
    )
    assert resp.status_code == 200, resp.text
    clock.at = at(2026, 12, 30)
    resp = await client.post(f"{API}/competitions/paid/cancel", headers=SERVICE_AUTH)
    assert resp.status_code == 200, resp.text
    assert resp.json()["data"]["status"] == "cancelled"
    # Once cancelled, a second cancel is refused for everyone.
    for headers in (auth("org"), SERVICE_AUTH):
        resp = await client.post(f"{API}/competitions/late/cancel", headers=headers)
        assert_error(resp, 409, "competition_closed")

    trails = {cid: await _audit(client, SERVICE_AUTH, cid) for cid in ("early", "late", "paid")}
    assert {
        cid: [(r["action"], r["by"], r["reason"], r["at"]) for r in log]
        for cid, log in trails.items()
    } == {
        "early": [("cancel", "org", "too few", "2026-11-21T11:59:00.000Z")],
        "late": [("cancel", "service", "fraud", "2026-11-21T12:00:00.000Z")],
        "paid": [("cancel", "service", "", "2026-12-30T00:00:00.000Z")],
    }
    # The organizer reads the trail of their cancelled competition.
    assert await _audit(client, auth("org"), "late") == trails["late"]


async def test_only_the_organizer_or_service_cancels(client: httpx.AsyncClient) -> None:
    await create_comp(client, "c", visibility="public")
    await create_comp(client, "p")
    await join(client, "c", "a")
    await join(client, "p", "a")
    assert_error(
        await client.post(f"{API}/competitions/c/cancel", headers=auth("a")), 403, "not_organizer"
    )
    assert_error(
        await client.post(f"{API}/competitions/c/cancel", headers=auth("x")), 403, "not_organizer"
    )
    assert_error(
        await client.post(f"{API}/competitions/p/cancel", headers=auth("x")),
        404,
        "competition_not_found",
    )
    assert await _audit(client, SERVICE_AUTH) == []


# --- max_participants ------------------------------------------------------------------------


async def test_max_participants_holds_against_a_racing_edit(client: httpx.AsyncClient) -> None:
    for round_, position in enumerate((0, 1, 5, 20)):
        cid = f"c{round_}"
        await create_comp(client, cid, start_date="2026-11-20", end_date="2026-11-30")
        users = [f"u{round_}x{i}" for i in range(80)]
        calls = [client.post(f"{API}/competitions/{cid}/join", headers=auth(u)) for u in users]
        edit = client.patch(
            f"{API}/competitions/{cid}", json={"max_participants": 5}, headers=auth("org")
        )
        calls.insert(position, edit)
        resps = await asyncio.gather(*calls)
        edit_resp = resps.pop(position)
        joined = [u for u, r in zip(users, resps, strict=True) if r.status_code == 200]
        for r in resps:
            if r.status_code != 200:
                assert_error(r, 409, "competition_full")
        got = (await client.get(f"{API}/competitions/{cid}", headers=auth("org"))).json()["data"]
        if edit_resp.status_code == 200:
            assert got["max_participants"] == 5
            assert len(joined) <= 5
        else:
            assert_error(edit_resp, 409, "too_many_participants")
            assert got["max_participants"] is None
            assert len(joined) == 80
        assert got["participant_count"] == len(joined)
        data = await board(client, cid, "org", limit=1000)
        assert data["total_count"] == len(joined)
        assert sorted(e["user_id"] for e in data["entries"]) == sorted(joined)
        if edit_resp.status_code == 200 and len(joined) == 5:
            resp = await client.post(f"{API}/competitions/{cid}/join", headers=auth("late"))
            assert_error(resp, 409, "competition_full")


async def test_max_participants_below_the_count(client: httpx.AsyncClient) -> None:
    await create_comp(client, "c", start_date="2026-11-20", end_date="2026-11-30")
    await join(client, "c", "a", "b", "x")
    resp = await client.patch(
        f"{API}/competitions/c", json={"max_participants": 2}, headers=auth("org")
    )
    assert_error(resp, 409, "too_many_participants")
    got = (await client.get(f"{API}/competitions/c", headers=auth("org"))).json()["data"]
    assert (got["max_participants"], got["participant_count"]) == (None, 3)
    resp = await client.patch(
        f"{API}/competitions/c", json={"max_participants": 3}, headers=auth("org")
    )
    assert resp.status_code == 200, resp.text
    resp = await client.post(f"{API}/competitions/c/leave", headers=auth("b"))
    assert resp.status_code == 200, resp.text
    await join(client, "c", "d")
    assert_error(
        await client.post(f"{API}/competitions/c/join", headers=auth("e")), 409, "competition_full"
    )


# --- participation records ------------------------------------------------------------------


async def test_leave_keeps_the_participation_and_rejoin_backfills(
    client: httpx.AsyncClient, ctx: AppContext, clock: FixedClock
) -> None:
    await create_comp(client, "c", entry_fee_cents=250)
    joined_ms = to_ms(clock.at)
    await join(client, "c", "a", "b")
    await sync(client, "a", rec("2026-11-02", 400), rec("2026-11-03", 600), rec("2026-10-30", 9))
    await sync(client, "b", rec("2026-11-02", 700))
    assert await standings(client, "c") == [("a", 1, 1000), ("b", 2, 700)]
    part = await reads.participation(ctx, "c", "a")
    assert part is not None
    assert (part["state"], part["joins"], part["joined_at"]) == ("active", 1, joined_ms)
    assert part["fee_cents"] == 250

    clock.advance(hours=1)
    left_ms = to_ms(clock.at)
    resp = await client.post(f"{API}/competitions/c/leave", headers=auth("a"))
    assert resp.status_code == 200, resp.text
    assert resp.json()["data"]["participant_count"] == 1
    assert await standings(client, "c") == [("b", 1, 700)]
    part = await reads.participation(ctx, "c", "a")
    assert part is not None
    assert (part["state"], part["left_at"], part["joins"]) == ("left", left_ms, 1)
    assert (part["joined_at"], part["fee_cents"]) == (joined_ms, 250)
    # A day synced while out is stored, and counted once they are back.
    result = await sync(client, "a", rec("2026-11-04", 50))
    assert result["competitions"] == []
    resp = await client.get(f"{API}/leaderboard/c", headers=auth("a"))
    assert_error(resp, 404, "competition_not_found")

    clock.advance(hours=1)
    rejoined_ms = to_ms(clock.at)
    await join(client, "c", "a")
    assert await standings(client, "c") == [("a", 1, 1050), ("b", 2, 700)]
    part = await reads.participation(ctx, "c", "a")
    assert part is not None
    assert (part["state"], part["joins"], part["joined_at"]) == ("active", 2, rejoined_ms)
    assert part.get("left_at") is None
    assert part["fee_cents"] == 250
    me = (await board(client, "c", "a"))["me"]
    assert (me["score"], me["steps"], me["rank"]) == (1050, 1050, 1)
    # b, who never left, has one join.
    part = await reads.participation(ctx, "c", "b")
    assert part is not None and (part["state"], part["joins"]) == ("active", 1)
    assert await reads.participation(ctx, "c", "nobody") is None


async def test_sweep_finishes_owed_work(client: httpx.AsyncClient, ctx: AppContext) -> None:
    """A sync whose request died after storing (step 1 of the saga) and a join whose
    request died before its back-fill are finished by the background sweep."""
    await create_comp(client, "c")
    await join(client, "c", "a", "b")
    now_ms = to_ms(ctx.clock.now())
    code, owed = await writes.store(ctx, "a", now_ms, [("2026-11-02", "phone", (800, 0, 0, 0))])
    assert code is Reply.OK and isinstance(owed, list) and len(owed) == 1
    await sync(client, "b", rec("2026-11-03", 300))
    assert await standings(client, "c") == [("b", 1, 300), ("a", 2, 0)]
    assert await sweep.run_once(ctx, join_grace_ms=0) == 1
    assert await standings(client, "c") == [("a", 1, 800), ("b", 2, 300)]
    # Nothing is left owed: a second sweep pushes nothing and changes nothing.
    assert await sweep.run_once(ctx, join_grace_ms=0) == 0
    assert await standings(client, "c") == [("a", 1, 800), ("b", 2, 300)]


async def test_a_single_cent_is_money(client: httpx.AsyncClient) -> None:
    # An entry fee or a prize pool of one cent: the organizer may compete for it, so only
    # the service role writes scores (found by mutation testing: `> 0`, not `> 1`).
    await create_comp(client, "fee1", entry_fee_cents=1)
    await create_comp(client, "pool1", prize_pool_cents=1)
    for cid in ("fee1", "pool1"):
        await join(client, cid, "a")
        resp = await client.post(UPDATE, json=_write("a", cid, steps=5), headers=auth("org"))
        assert_error(resp, 403, "service_only")


async def test_visibility_reaches_the_board(client: httpx.AsyncClient) -> None:
    # The board script reads the visibility the competition's rules stored beside it: a
    # public board is open to any signed-in user, a private one is unknown to them.
    await create_comp(client, "open", visibility="public")
    await create_comp(client, "closed")
    await join(client, "open", "a")
    await join(client, "closed", "a")
    resp = await client.get(f"{API}/leaderboard/open", headers=auth("outsider"))
    assert resp.status_code == 200, resp.text
    assert [e["user_id"] for e in resp.json()["data"]["entries"]] == ["a"]
    resp = await client.get(f"{API}/leaderboard/closed", headers=auth("outsider"))
    assert_error(resp, 404, "competition_not_found")
