"""Rules the mutation run (`python -m tests.mutation`) found untested: each test pins a
behaviour that a planted change of a Lua script (tests/mutation/planted.py, named in
each docstring) broke while every other test still passed.

Everything runs on the real Redis of the test session; a few tests call the engine's
scripts directly, where the API cannot reach the case (a race, a second call that the
service short-cuts).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import orjson

from healthcomp.app import create_app
from healthcomp.core.clock import FixedClock, to_ms
from healthcomp.core.context import AppContext
from healthcomp.core.inputs import NAME_PATTERN, TEXT_PATTERN
from healthcomp.engine import recount, writes
from healthcomp.engine.codes import Reply
from tests.conftest import SERVICE_AUTH, auth, make_settings
from tests.domain.helpers import API, app_clock, at, board, create_comp, join, rec, standings, sync

UPDATE = f"{API}/leaderboard/update"


# --- sync and scores -----------------------------------------------------------------


async def test_resending_the_same_day_makes_no_event(client: httpx.AsyncClient) -> None:
    """sync.resend_bumps_version: identical data is no change, so the board's event id
    stays where it was (a client watching the board sees nothing)."""
    await create_comp(client, "c")
    await join(client, "c", "a")
    await sync(client, "a", rec("2026-11-03", 4000, distance=3000))
    before = (await board(client, "c", "a"))["event_id"]
    for _ in range(2):
        await sync(client, "a", rec("2026-11-03", 4000, distance=3000))
    assert (await board(client, "c", "a"))["event_id"] == before


async def test_a_score_never_falls_below_zero(client: httpx.AsyncClient) -> None:
    """score.no_floor: an adjustment to 0 over 5,000 steps, then the day corrected down to
    1,000: the offset would make -4,000; the score is 0."""
    await create_comp(client, "c")
    await join(client, "c", "a", "b")
    await sync(client, "a", rec("2026-11-03", 5000))
    resp = await client.post(
        UPDATE, json={"user_id": "a", "competition_id": "c", "steps": 0}, headers=auth("org")
    )
    assert resp.status_code == 200, resp.text
    await sync(client, "a", rec("2026-11-03", 1000))
    assert sorted(await standings(client, "c")) == [("a", 1, 0), ("b", 1, 0)]


async def test_an_adjustment_alone_survives_leave_and_rejoin(client: httpx.AsyncClient) -> None:
    """adjust.lost_on_rejoin: a participant whose score is only an adjustment (no synced
    day to count again on the way back) keeps it across leave and rejoin."""
    await create_comp(client, "c")
    await join(client, "c", "a", "b")
    resp = await client.post(
        UPDATE, json={"user_id": "a", "competition_id": "c", "steps": 500}, headers=auth("org")
    )
    assert resp.status_code == 200, resp.text
    resp = await client.post(f"{API}/competitions/c/leave", headers=auth("a"))
    assert resp.status_code == 200, resp.text
    await join(client, "c", "a")
    assert await standings(client, "c") == [("a", 1, 500), ("b", 2, 0)]


# --- tie order -----------------------------------------------------------------------


async def test_a_write_that_keeps_the_score_keeps_the_place(
    client: httpx.AsyncClient, clock: FixedClock
) -> None:
    """tie.moves_without_score_change: on a steps board, a distance change of a counted
    day re-applies the day without changing the score; a, first to 5,000, stays first."""
    await create_comp(client, "c")
    await join(client, "c", "a", "b")
    await sync(client, "a", rec("2026-11-03", 5000))
    clock.advance(seconds=5)
    await sync(client, "b", rec("2026-11-03", 5000))
    clock.advance(seconds=5)
    await sync(client, "a", rec("2026-11-03", 5000, distance=3500))
    assert await standings(client, "c") == [("a", 1, 5000), ("b", 1, 5000)]
    me = (await board(client, "c", "a"))["me"]
    assert me["distance"] == 3500


async def test_writes_in_one_millisecond_get_distinct_tie_times(
    client: httpx.AsyncClient, ctx: AppContext
) -> None:
    """tie.same_millisecond: concurrent syncs land in one pipeline, several in the same
    millisecond of the server's clock; each still gets its own tie time (strictly
    increasing per competition), so arrival, not the user id, orders the tie."""
    users = [f"u{i:02d}" for i in range(12)]
    await create_comp(client, "c")
    await join(client, "c", *users)
    await asyncio.gather(*(sync(client, u, rec("2026-11-03", 700)) for u in users))
    members = [str(m) for m in await ctx.r.zrange(ctx.keys.board("c"), 0, -1)]
    reached = [m.split(":", 1)[0] for m in members]
    assert len(members) == len(users)
    assert len(set(reached)) == len(reached), members
    assert reached == sorted(reached)


# --- recount -------------------------------------------------------------------------


async def test_a_shorter_window_drops_the_days_after_its_end(
    client: httpx.AsyncClient, ctx: AppContext, clock: FixedClock
) -> None:
    """recount.days_after_window: the recount sums again from the days the competition
    holds; after an edit that moves the end earlier, a day past the new end is gone."""
    await create_comp(client, "c", start_date="2026-12-01", end_date="2026-12-31")
    await join(client, "c", "a")
    now_ms = to_ms(clock.now())
    # The engine's own write (the API takes no day that has not begun).
    records = [("2026-12-05", "phone", (100, 0, 0, 0)), ("2026-12-20", "phone", (1000, 0, 0, 0))]
    await writes.sync(ctx, "a", now_ms, records)
    assert await standings(client, "c") == [("a", 1, 1100)]
    resp = await client.patch(
        f"{API}/competitions/c", json={"end_date": "2026-12-10"}, headers=auth("org")
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["data"]["recount"]["state"] == "done"
    assert await standings(client, "c") == [("a", 1, 100)]


async def test_a_step_of_a_superseded_recount_writes_nothing(
    client: httpx.AsyncClient, ctx: AppContext, clock: FixedClock
) -> None:
    """recount.superseded_step_writes: while the job of rules 3 runs, a late step of the
    job of rules 2 (a runner that has not noticed the newer edit) answers STALE."""
    await create_comp(client, "c", start_date="2026-12-01", end_date="2026-12-31")
    await join(client, "c", "a")
    for end in ("2026-12-20", "2026-12-10"):
        resp = await client.patch(
            f"{API}/competitions/c", json={"end_date": end}, headers=auth("org")
        )
        assert resp.status_code == 200, resp.text
    job = await ctx.r.hgetall(ctx.keys.recount("c"))
    assert job["rules"] == "3"
    # The newer job, caught mid-run.
    await ctx.r.hset(ctx.keys.recount("c"), "state", "running")
    now_ms = to_ms(clock.now())
    window = ("2026-12-01", "2026-12-20", now_ms + 10**10)
    assert await recount._step(ctx, "c", "a", 2, window, now_ms) is Reply.STALE
    assert await recount._step(ctx, "c", "a", 3, window, now_ms) is Reply.OK


# --- prizes --------------------------------------------------------------------------


async def _distributed(client: httpx.AsyncClient, cid: str) -> dict[str, Any]:
    await create_comp(client, cid, prize_pool_cents=600)
    await join(client, cid, "a", "b", "c")
    for user, n in (("a", 300), ("b", 200), ("c", 100)):
        await sync(client, user, rec("2026-11-05", n))
    app_clock(client).at = at(2026, 12, 5)
    resp = await client.post(f"{API}/prizes/distribute/{cid}", headers=auth("org"))
    assert resp.status_code == 200, resp.text
    data: dict[str, Any] = resp.json()["data"]
    return data


async def test_a_finalized_competition_is_never_finalized_again(
    client: httpx.AsyncClient, ctx: AppContext
) -> None:
    """distribute.twice: the script itself refuses a second ledger, even one computed at
    the board's current version (the service reads the ledger first; this holds without
    it)."""
    await _distributed(client, "f")
    version = int(await ctx.r.hget(ctx.keys.meta("f"), "ver"))
    outbox = await ctx.r.xlen(ctx.keys.outbox("f"))
    line = writes.LedgerLine("f:prize:x", orjson.dumps({"id": "f:prize:x"}).decode(), True)
    code = await writes.finalize(
        ctx,
        "f",
        version=version,
        now_ms=to_ms(at(2026, 12, 6)),
        summary="{}",
        outcome="prizes",
        pool=1,
        lines=[line],
    )
    assert code is Reply.CLOSED
    assert await ctx.r.hget(ctx.keys.ledger("f"), "f:prize:x") is None
    assert await ctx.r.xlen(ctx.keys.outbox("f")) == outbox
    assert int(await ctx.r.hget(ctx.keys.meta("f"), "ver")) == version


async def test_a_ledger_of_an_older_board_is_not_written(
    client: httpx.AsyncClient, ctx: AppContext
) -> None:
    """distribute.stale_ledger: a ledger computed at version v is refused once a trusted
    write moved the board to v + 1 (the service computes again)."""
    await create_comp(client, "s", prize_pool_cents=600)
    await join(client, "s", "a", "b")
    await sync(client, "a", rec("2026-11-05", 300))
    version = int(await ctx.r.hget(ctx.keys.meta("s"), "ver"))
    body = {"user_id": "b", "competition_id": "s", "steps": 900}
    resp = await client.post(UPDATE, json=body, headers=SERVICE_AUTH)
    assert resp.status_code == 200, resp.text
    line = writes.LedgerLine("s:prize:a", orjson.dumps({"id": "s:prize:a"}).decode(), True)
    code = await writes.finalize(
        ctx,
        "s",
        version=version,
        now_ms=to_ms(at(2026, 12, 6)),
        summary="{}",
        outcome="prizes",
        pool=600,
        lines=[line],
    )
    assert code is Reply.STALE
    assert await ctx.r.hgetall(ctx.keys.ledger("s")) == {}
    assert await ctx.r.hget(ctx.keys.meta("s"), "state") == "open"


async def test_a_payment_result_is_recorded_once(
    client: httpx.AsyncClient, ctx: AppContext
) -> None:
    """settle.twice: a line settled `paid` stays paid when a second result (a worker run
    again, a result delivered twice) says `failed`."""
    await _distributed(client, "p")
    payouts = await writes.claim_payouts(ctx, "p", "w1")
    assert payouts
    first = payouts[0]
    assert await writes.settle_payout(ctx, "p", first, "paid", "ref-1", "2026-12-05T00:00:00Z") == (
        "pending"
    )
    again = await writes.settle_payout(ctx, "p", first, "failed", "ref-2", "2026-12-05T00:01:00Z")
    assert again == "paid"
    line = orjson.loads(await ctx.r.hget(ctx.keys.ledger("p"), first.line["id"]))
    assert (line["status"], line["payment_ref"]) == ("paid", "ref-1")


async def test_a_tie_at_the_last_paid_place_shares_it(client: httpx.AsyncClient) -> None:
    """payout.tie_at_last_place_dropped: the payout reads the first k of the board and
    everyone tied with the k-th: c and d tie for third and split its 10%."""
    await create_comp(client, "t", prize_pool_cents=10000)
    await join(client, "t", "a", "b", "c", "d")
    for user, n in (("a", 5000), ("b", 4000), ("c", 3000), ("d", 3000)):
        await sync(client, user, rec("2026-11-05", n))
    resp = await client.post(f"{API}/prizes/calculate/t", headers=auth("org"))
    assert resp.status_code == 200, resp.text
    prizes = resp.json()["data"]["prizes"]
    assert [(p["user_id"], p["amount_cents"], p["places"]) for p in prizes] == [
        ("a", 6000, [1, 1]),
        ("b", 3000, [2, 2]),
        ("c", 500, [3, 4]),
        ("d", 500, [3, 4]),
    ]


# --- listings ------------------------------------------------------------------------


async def test_active_competitions_are_listed_soonest_end_first(
    client: httpx.AsyncClient,
) -> None:
    """index.active_by_start: `late` started first but ends last; `soon` started later and
    ends first: the active listing puts `soon` first (public ones: the index's own order)."""
    for cid, start, end in (("late", "01", "30"), ("soon", "05", "20")):
        await create_comp(
            client,
            cid,
            start_date=f"2026-11-{start}",
            end_date=f"2026-11-{end}",
            visibility="public",
        )
    # The service role reads the index as it is; a user, the public listing.
    for headers in (SERVICE_AUTH, auth("someone")):
        resp = await client.get(f"{API}/competitions", params={"status": "active"}, headers=headers)
        assert resp.status_code == 200, resp.text
        assert [c["id"] for c in resp.json()["data"]["items"]] == ["soon", "late"]


# --- strict input (core/inputs.py) ----------------------------------------------------


async def test_a_boolean_preview_pool_is_a_decimal_type_error(client: httpx.AsyncClient) -> None:
    """Python mutants of inputs._amount: `{"prize_pool": true}` is a 422 naming the field
    with the type `decimal_type` (a client can tell it from a malformed amount)."""
    await create_comp(client, "b", prize_pool_cents=1000)
    resp = await client.post(
        f"{API}/prizes/calculate/b", json={"prize_pool": True}, headers=auth("org")
    )
    assert resp.status_code == 422, resp.text
    details = resp.json()["details"]
    assert [(d["field"], d["type"]) for d in details] == [("prize_pool", "decimal_type")]


def test_the_schema_documents_what_the_strict_types_take(tmp_path: Path) -> None:
    """Python mutants of inputs' schema hooks (`_NumberInSchema`, `SchemaPattern`): a
    percentage is documented as the JSON number it must be, with its bounds under JSON
    Schema's names and nothing of pydantic's own; a name and a text carry the pattern of
    what their validators refuse."""
    spec = create_app(make_settings(tmp_path, None)).openapi()
    props = spec["components"]["schemas"]["CompetitionCreate"]["properties"]
    assert props["rake_percent"] == {
        "type": "number",
        "minimum": 0.0,
        "maximum": 100.0,
        "title": "Rake Percent",
        "default": 0,
    }
    assert props["name"]["pattern"] == NAME_PATTERN
    assert props["description"]["anyOf"][0]["pattern"] == TEXT_PATTERN
    text = orjson.dumps(spec).decode()
    assert "decimal_places" not in text and "max_digits" not in text


async def test_a_percentage_as_a_string_is_a_decimal_type_error(
    client: httpx.AsyncClient,
) -> None:
    """Python mutants of inputs._number_for_decimal: `"rake_percent": "2.5"` is a 422 with
    the type `decimal_type` (exact decimals travel as JSON numbers)."""
    resp = await client.post(
        f"{API}/competitions",
        json={
            "name": "x",
            "metric": "steps",
            "start_date": "2026-11-20",
            "end_date": "2026-11-30",
            "rake_percent": "2.5",
        },
        headers=auth("org"),
    )
    assert resp.status_code == 422, resp.text
    details = resp.json()["details"]
    assert [(d["field"], d["type"]) for d in details] == [("rake_percent", "decimal_type")]


# --- access (competitions/access.py) ------------------------------------------------


async def test_only_the_organizer_manages(client: httpx.AsyncClient) -> None:
    """Python mutants of access.organizer_of: a participant who is not the organizer gets
    403 `not_organizer` (they can see the competition); an outsider of a private one gets
    the unknown-id 404; the organizer and the service role get through."""
    await create_comp(client, "m")
    await join(client, "m", "a")
    resp = await client.patch(f"{API}/competitions/m", json={"name": "n"}, headers=auth("a"))
    assert resp.status_code == 403, resp.text
    assert (resp.json()["error"], resp.json()["message"]) == (
        "not_organizer",
        "Only the competition's organizer may do this.",
    )
    resp = await client.patch(f"{API}/competitions/m", json={"name": "n"}, headers=auth("zed"))
    assert resp.status_code == 404 and resp.json()["error"] == "competition_not_found"
    for headers in (auth("org"), SERVICE_AUTH):
        resp = await client.patch(f"{API}/competitions/m", json={"name": "n"}, headers=headers)
        assert resp.status_code == 200, resp.text
