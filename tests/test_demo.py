"""The demo competition `make run` seeds: it must seed, on every Redis mode, and rank."""

from __future__ import annotations

import httpx

from healthcomp import demo
from healthcomp.core.context import AppContext
from tests.conftest import auth


async def test_the_demo_seeds_once_and_ranks(client: httpx.AsyncClient, ctx: AppContext) -> None:
    assert await demo.seed(ctx, participants=12) is True
    assert await demo.seed(ctx, participants=12) is False  # already there
    resp = await client.get(
        f"/api/v1/leaderboard/{demo.DEMO_ID}",
        params={"around": "me", "limit": 5},
        headers=auth(demo.DEMO_USER),
    )
    assert resp.status_code == 200, resp.text
    data = resp.json()["data"]
    assert data["total_count"] == 12
    assert data["me"]["user_id"] == demo.DEMO_USER
    ranks = [e["rank"] for e in data["entries"]]
    assert ranks == sorted(ranks) and ranks[0] >= 1
    # Public: any signed-in user reads its board.
    other = await client.get(f"/api/v1/leaderboard/{demo.DEMO_ID}", headers=auth("visitor"))
    assert other.status_code == 200, other.text
