"""The user's record of their competitions' windows (`cw`): what a sync chooses its
targets from. An older window must never replace a newer one."""

from __future__ import annotations

import httpx

from healthcomp.core.clock import FixedClock, to_ms
from healthcomp.core.context import AppContext
from healthcomp.engine import recount, writes
from tests.conftest import auth
from tests.domain.helpers import API, at, create_comp, join, rec, standings, sync


async def test_a_late_back_fill_keeps_the_newer_window(
    client: httpx.AsyncClient, ctx: AppContext, clock: FixedClock
) -> None:
    # A join answered with the window of rules version 1; before its back-fill ran, an
    # edit (rules 2) moved the window and its recount already recorded the new one.
    clock.at = at(2026, 11, 10, 8)
    await create_comp(client, "c", start_date="2026-11-12", end_date="2026-11-20")
    await join(client, "c", "a")
    await sync(client, "a", rec("2026-11-10", 700))
    resp = await client.patch(
        f"{API}/competitions/c", json={"start_date": "2026-11-10"}, headers=auth("org")
    )
    assert resp.status_code == 200, resp.text
    assert await ctx.r.hget(ctx.keys.windows("a"), "c") == (
        f"2026-11-10|2026-11-20|{to_ms(at(2026, 11, 22, 12))}|2"
    )
    stale = ("2026-11-12", "2026-11-20", to_ms(at(2026, 11, 22, 12)), 1)
    await writes.backfill(ctx, "a", "c", stale, to_ms(clock.now()))
    assert str(await ctx.r.hget(ctx.keys.windows("a"), "c")).startswith("2026-11-10|")
    # So a later sync of a day only the new window holds still reaches the board.
    await sync(client, "a", rec("2026-11-10", 900))
    assert await standings(client, "c") == [("a", 1, 900)]
    assert await recount.run_all(ctx, to_ms(clock.now())) == 0
