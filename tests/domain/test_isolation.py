"""A failure in one competition's step never blocks the user's other competitions."""

from __future__ import annotations

import httpx
import pytest

from healthcomp.core.clock import FixedClock, to_ms
from healthcomp.core.context import AppContext
from healthcomp.engine import writes
from tests.domain.helpers import create_comp, join, rec, standings, sync


async def test_a_broken_competition_does_not_block_the_others(
    client: httpx.AsyncClient,
    ctx: AppContext,
    clock: FixedClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await create_comp(client, "good")
    await create_comp(client, "bad")
    await join(client, "good", "a")
    await join(client, "bad", "a")
    # Corrupt one competition so that its apply script fails with a Lua error.
    await ctx.r.hset(ctx.keys.meta("bad"), "metric_idx", "not-a-number")
    for steps in (1000, 2000):
        data = await sync(client, "a", rec("2026-11-05", steps))
        assert [c["competition_id"] for c in data["competitions"]] == ["good"]
        assert await standings(client, "good") == [("a", 1, steps)]
    assert "to bad failed" in caplog.text
    # Its days stay owed, for the sweep once the competition is repaired.
    owed = await ctx.r.hgetall(ctx.keys.owed("a"))
    assert set(owed) == {"bad|2026-11-05"}
    await ctx.r.hset(ctx.keys.meta("bad"), "metric_idx", "0")
    assert await writes.repair(ctx, "a", to_ms(clock.now())) == 1
    assert await standings(client, "bad") == [("a", 1, 2000)]
    assert await ctx.r.hgetall(ctx.keys.owed("a")) == {}
