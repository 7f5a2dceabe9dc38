"""POST /api/v1/prizes/distribute/{id}: the ledger, exactly once, on the real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from healthcomp.competitions import service as competitions
from healthcomp.core.clock import to_ms
from healthcomp.core.context import AppContext
from healthcomp.engine import reads, writes
from tests.conftest import SERVICE_AUTH, assert_error, auth, make_settings
from tests.core.support import running_app
from tests.domain.helpers import API, app_clock, at, create_comp, join, rec, sync

DAY = "2026-11-05"
AFTER_GRACE = at(2026, 12, 5)


async def setup_field(
    client: httpx.AsyncClient, cid: str, steps: dict[str, int], **fields: Any
) -> None:
    await create_comp(client, cid, **fields)
    await join(client, cid, *steps)
    for user, n in steps.items():
        if n:
            await sync(client, user, rec(DAY, n))


async def distribute(client: httpx.AsyncClient, cid: str, who: str = "org") -> httpx.Response:
    headers = SERVICE_AUTH if who == "service" else auth(who)
    return await client.post(f"{API}/prizes/distribute/{cid}", headers=headers)


def dying(message: str) -> Callable[..., Awaitable[Any]]:
    """A step that fails as if its connection (or its process) died: 503 to the caller."""

    async def fails(*args: Any, **kwargs: Any) -> Any:
        raise RedisConnectionError(message)

    return fails


async def test_not_before_the_grace_period_is_over(client: httpx.AsyncClient) -> None:
    await setup_field(client, "early", {"a": 100}, prize_pool_cents=1000)
    body = assert_error(await distribute(client, "early"), 409, "too_early")
    assert "2026-12-01" in body["message"] or "2026-12-02" in body["message"]


async def test_the_ledger_is_written_once_and_the_competition_finalized(
    client: httpx.AsyncClient, ctx: AppContext
) -> None:
    await setup_field(
        client, "final", {"a": 5000, "b": 4000, "c": 4000, "d": 1000}, prize_pool_cents=10000
    )
    app_clock(client).at = AFTER_GRACE
    resp = await distribute(client, "final")
    assert resp.status_code == 200, resp.text
    data = resp.json()["data"]
    assert data["final"] is True and data["outcome"] == "prizes" and data["pool_cents"] == 10000
    assert [(x["user_id"], x["amount"], x["reason"]) for x in data["lines"]] == [
        ("a", "60.00", "place 1"), ("b", "20.00", "places 2-3"), ("c", "20.00", "places 2-3"),
    ]  # fmt: skip
    assert {x["id"] for x in data["lines"]} == {"final:prize:a", "final:prize:b", "final:prize:c"}
    assert await ctx.r.xlen(ctx.keys.outbox("final")) == 3
    # Again: the same ledger, nothing more in the outbox.
    again = await distribute(client, "final", "service")
    assert again.status_code == 200, again.text
    assert again.json()["data"] == data and await ctx.r.xlen(ctx.keys.outbox("final")) == 3
    competition = (await client.get(f"{API}/competitions/final", headers=auth("a"))).json()
    assert competition["data"]["status"] == "finalized"
    # The board's last event says so (the WebSocket's competition_finalized).
    last = (await reads.events_since(ctx, "final", data["event_id"]))[-1].data
    assert (last["type"], last["outcome"], last["pool_cents"]) == ("finalized", "prizes", 10000)
    # The board is frozen: a sync is stored but moves nothing; no score write applies.
    before = (await client.get(f"{API}/leaderboard/final", headers=auth("a"))).json()["data"]
    await sync(client, "d", rec(DAY, 99999))
    after = (await client.get(f"{API}/leaderboard/final", headers=auth("a"))).json()["data"]
    assert after["entries"] == before["entries"] and after["event_id"] == before["event_id"]
    body = {"user_id": "d", "competition_id": "final", "steps": 1, "distance": 0, "calories": 0}
    resp = await client.post(f"{API}/leaderboard/update", json=body, headers=SERVICE_AUTH)
    assert_error(resp, 409, "competition_closed")


async def test_twenty_concurrent_calls_make_one_ledger(
    client: httpx.AsyncClient, ctx: AppContext
) -> None:
    await setup_field(client, "race", {"a": 300, "b": 200, "c": 100}, prize_pool_cents=999)
    app_clock(client).at = AFTER_GRACE
    answers = await asyncio.gather(*(distribute(client, "race") for _ in range(20)))
    assert {r.status_code for r in answers} == {200}
    bodies = [r.json()["data"] for r in answers]
    assert all(b == bodies[0] for b in bodies)
    assert sum(x["amount_cents"] for x in bodies[0]["lines"]) == 999
    assert await ctx.r.xlen(ctx.keys.outbox("race")) == 3


async def test_no_prizes_refund_every_fee(client: httpx.AsyncClient) -> None:
    await setup_field(client, "short", {"a": 100, "b": 0}, min_participants=3, entry_fee_cents=700)
    app_clock(client).at = AFTER_GRACE
    data = (await distribute(client, "short")).json()["data"]
    assert (data["outcome"], data["refund_reason"], data["pool_cents"]) == (
        "refunds", "below_min_participants", 0,
    )  # fmt: skip
    assert [(x["kind"], x["user_id"], x["amount_cents"]) for x in data["lines"]] == [
        ("refund", "a", 700), ("refund", "b", 700),
    ]  # fmt: skip


async def test_a_crash_before_or_after_the_write_leaves_one_ledger(
    client: httpx.AsyncClient, ctx: AppContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    await setup_field(client, "crash", {"a": 300, "b": 200}, prize_pool_cents=500)
    app_clock(client).at = AFTER_GRACE
    real_finalize, real_closed = writes.finalize, competitions.closed

    monkeypatch.setattr(writes, "finalize", dying("connection lost before the script ran"))
    assert_error(await distribute(client, "crash"), 503)
    assert await ctx.r.exists(ctx.keys.ledger("crash")) == 0  # nothing written

    monkeypatch.setattr(writes, "finalize", real_finalize)
    monkeypatch.setattr(
        competitions, "closed", dying("the process died after the ledger was written")
    )
    assert_error(await distribute(client, "crash"), 503)
    assert await ctx.r.xlen(ctx.keys.outbox("crash")) == 2  # written whole

    monkeypatch.setattr(competitions, "closed", real_closed)
    data = (await distribute(client, "crash")).json()["data"]
    assert [x["amount_cents"] for x in data["lines"]] == [333, 167]
    assert await ctx.r.xlen(ctx.keys.outbox("crash")) == 2
    listed = await client.get(f"{API}/competitions?status=finalized", headers=auth("org"))
    assert "crash" in {c["id"] for c in listed.json()["data"]["items"]}


async def listed(client: httpx.AsyncClient, status: str) -> set[str]:
    """The service role's listing: the indexes as they are (a user's own private ones
    are placed by their live status)."""
    resp = await client.get(f"{API}/competitions?status={status}", headers=SERVICE_AUTH)
    assert resp.status_code == 200, resp.text
    return {c["id"] for c in resp.json()["data"]["items"]}


async def test_the_sweep_finishes_the_listing_of_a_distribution_cut_short(
    client: httpx.AsyncClient, ctx: AppContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process that dies between the ledger script and the listing step: no later
    call is needed, the sweep's step finishes it, at the time of the script."""
    await setup_field(client, "cut", {"a": 300, "b": 200}, prize_pool_cents=500)
    app_clock(client).at = AFTER_GRACE

    monkeypatch.setattr(
        competitions, "closed", dying("the process died after the ledger was written")
    )
    assert_error(await distribute(client, "cut"), 503)
    monkeypatch.undo()
    assert "cut" in await listed(client, "ended") and "cut" not in await listed(client, "finalized")
    assert await ctx.r.zscore(ctx.keys.organized("org"), "cut") != 0  # still counted open
    finalized_ms = int(await ctx.r.hget(ctx.keys.meta("cut"), "finalized_ms"))

    later = AFTER_GRACE + timedelta(hours=1)  # a listing of the sweep's time is wrong
    app_clock(client).at = later
    assert await competitions.finish_closings(ctx, to_ms(later)) == 1
    assert "cut" in await listed(client, "finalized") and "cut" not in await listed(client, "ended")
    assert await ctx.r.zscore(ctx.keys.organized("org"), "cut") == 0
    times = await ctx.r.hget(ctx.keys.index("times"), "cut")
    assert times.split("|")[2:5:2] == ["finalized", str(finalized_ms)]
    assert await ctx.r.exists(ctx.keys.index("closing")) == 0  # the marker went
    assert await competitions.finish_closings(ctx, to_ms(later)) == 0  # nothing left


async def test_the_apps_sweep_finishes_the_listing_of_a_cancel_cut_short(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The app hands the step to its sweep: with a sweep every 0.2 s, a cancel whose
    process died after its script is listed cancelled, and its organizer's cap freed,
    with no other call."""
    settings = make_settings(tmp_path, redis_url, sweep_seconds=0.2)
    async with running_app(settings) as (app, client):
        ctx: AppContext = app.state.ctx
        await setup_field(client, "off2", {"a": 300}, entry_fee_cents=100)

        monkeypatch.setattr(
            competitions, "closed", dying("the process died after the cancel script")
        )
        resp = await client.post(
            f"{API}/competitions/off2/cancel", json={"reason": "rain"}, headers=auth("org")
        )
        assert_error(resp, 503)
        assert await ctx.r.hget(ctx.keys.meta("off2"), "state") == "cancelled"
        assert "off2" not in await listed(client, "cancelled")
        monkeypatch.undo()
        for _ in range(50):
            if "off2" in await listed(client, "cancelled"):
                break
            await asyncio.sleep(0.1)
        assert "off2" in await listed(client, "cancelled")
        assert "off2" not in await listed(client, "active")
        assert await ctx.r.zscore(ctx.keys.organized("org"), "off2") == 0
        assert await ctx.r.exists(ctx.keys.index("closing")) == 0


async def test_a_marker_whose_call_died_before_its_script_is_dropped_after_a_minute(
    client: httpx.AsyncClient, ctx: AppContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    await setup_field(client, "never", {"a": 300}, prize_pool_cents=500)
    app_clock(client).at = AFTER_GRACE

    monkeypatch.setattr(writes, "finalize", dying("connection lost before the script ran"))
    assert_error(await distribute(client, "never"), 503)
    monkeypatch.undo()
    key = ctx.keys.index("closing")
    marked = int(await ctx.r.zscore(key, "never"))
    # Within the minute the call may still be under way: the marker stays.
    assert await competitions.finish_closings(ctx, marked + 59_000) == 0
    assert await ctx.r.zscore(key, "never") == marked
    assert await competitions.finish_closings(ctx, marked + 61_000) == 0
    assert await ctx.r.zscore(key, "never") is None
    assert "never" in await listed(client, "ended")  # untouched: nothing was closed


async def test_a_refused_cancel_leaves_no_marker(
    client: httpx.AsyncClient, ctx: AppContext
) -> None:
    await setup_field(client, "late2", {"a": 300})
    app_clock(client).at = AFTER_GRACE
    resp = await client.post(
        f"{API}/competitions/late2/cancel", json={"reason": "rain"}, headers=auth("org")
    )
    assert_error(resp, 409, "competition_ended")
    assert await ctx.r.exists(ctx.keys.index("closing")) == 0


async def test_who_may_distribute(client: httpx.AsyncClient) -> None:
    await setup_field(client, "who", {"a": 100}, prize_pool_cents=100)
    await setup_field(client, "gone", {"b": 100})
    app_clock(client).at = AFTER_GRACE
    assert_error(await distribute(client, "who", "a"), 403, "not_organizer")
    assert_error(await distribute(client, "who", "stranger"), 404, "competition_not_found")
    assert_error(await client.post(f"{API}/prizes/distribute/who"), 401)
    assert_error(await distribute(client, "nope"), 404, "competition_not_found")
    assert_error(await distribute(client, "bad:id"), 422, "validation_error")
    resp = await client.post(
        f"{API}/competitions/gone/cancel", json={"reason": "rain"}, headers=SERVICE_AUTH
    )
    assert resp.status_code == 200, resp.text
    assert_error(await distribute(client, "gone"), 409, "competition_cancelled")


async def test_a_cancel_refunds_every_fee_once(client: httpx.AsyncClient, ctx: AppContext) -> None:
    await setup_field(client, "off", {"a": 100, "b": 50, "c": 0}, entry_fee_cents=1500)
    resp = await client.post(f"{API}/competitions/off/leave", headers=auth("c"))
    assert resp.status_code == 200, resp.text  # left: owes nothing, gets nothing back
    resp = await client.post(
        f"{API}/competitions/off/cancel", json={"reason": "venue"}, headers=auth("org")
    )
    assert resp.status_code == 200, resp.text
    again = await client.post(f"{API}/competitions/off/cancel", headers=auth("org"))
    assert_error(again, 409, "competition_closed")
    assert await ctx.r.xlen(ctx.keys.outbox("off")) == 2
    for user in ("a", "b"):
        data = (await client.get(f"{API}/prizes/history/{user}", headers=auth(user))).json()
        assert [
            (x["kind"], x["amount"], x["reason"], x["status"]) for x in data["data"]["items"]
        ] == [("refund", "15.00", "cancelled", "pending")]
    assert (await client.get(f"{API}/prizes/history/c", headers=auth("c"))).json()["data"][
        "count"
    ] == 0


async def test_history_shows_prizes_and_refunds_newest_first(client: httpx.AsyncClient) -> None:
    await setup_field(client, "h1", {"hana": 500, "ivo": 100}, prize_pool_cents=1000)
    await setup_field(client, "h2", {"hana": 500}, min_participants=2, entry_fee_cents=300)
    clock = app_clock(client)
    clock.at = at(2026, 12, 5)
    assert (await distribute(client, "h1")).status_code == 200
    clock.at = at(2026, 12, 6)
    assert (await distribute(client, "h2")).status_code == 200
    resp = await client.get(f"{API}/prizes/history/hana", headers=auth("hana"))
    items = resp.json()["data"]["items"]
    assert [(x["competition_id"], x["kind"], x["amount_cents"]) for x in items] == [
        ("h2", "refund", 300), ("h1", "prize", 667),
    ]  # fmt: skip
    assert items[1]["rank"] == 1 and items[1]["outcome"] == "prizes"
    # Self or the service role only.
    ok = await client.get(f"{API}/prizes/history/hana", headers=SERVICE_AUTH)
    assert ok.json()["data"]["count"] == 2
    assert_error(await client.get(f"{API}/prizes/history/hana", headers=auth("ivo")), 403)
    assert_error(await client.get(f"{API}/prizes/history/hana"), 401)
    assert_error(await client.get(f"{API}/prizes/history/bad:id", headers=SERVICE_AUTH), 422)
    nobody = await client.get(f"{API}/prizes/history/nobody", headers=SERVICE_AUTH)
    assert nobody.json()["data"] == {"user_id": "nobody", "items": [], "count": 0}
