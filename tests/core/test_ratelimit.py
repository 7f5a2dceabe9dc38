"""Per-user and per-IP limits: 429 with Retry-After, shared through Redis."""

from __future__ import annotations

import asyncio
from pathlib import Path

from healthcomp.core import ratelimit
from healthcomp.core.settings import Settings
from tests.conftest import assert_error, auth, make_settings
from tests.core.support import running_app

ME = "/api/v1/users/me"
SYNC = "/api/v1/fitness/sync"


def limited(tmp_path: Path, redis_url: str, user: int = 0, ip: int = 0) -> Settings:
    return make_settings(
        tmp_path,
        redis_url,
        rate_limit_user_per_minute=user,
        rate_limit_ip_per_minute=ip,
    )


async def test_user_limit_answers_429_with_retry_after(tmp_path: Path, redis_url: str) -> None:
    async with running_app(limited(tmp_path, redis_url, user=5)) as (_, client):
        for _ in range(5):
            assert (await client.get(ME, headers=auth("ann"))).status_code == 200
        resp = await client.get(ME, headers=auth("ann"))
        assert_error(resp, 429, "rate_limited")
        assert int(resp.headers["retry-after"]) >= 1
        # Someone else is not affected.
        assert (await client.get(ME, headers=auth("bob"))).status_code == 200


async def test_ip_limit_counts_rejected_tokens(tmp_path: Path, redis_url: str) -> None:
    async with running_app(limited(tmp_path, redis_url, ip=3)) as (_, client):
        bad = {"Authorization": "Bearer not.a.token"}
        for _ in range(2):
            assert_error(await client.get(ME, headers=bad), 401)
        assert_error(await client.get(ME), 401)  # no token at all counts too
        assert_error(await client.get(ME, headers=bad), 429, "rate_limited")
        assert_error(await client.get("/api/v1/leaderboard/x", headers=bad), 429, "rate_limited")
        # Signed-in users behind the same address (a carrier NAT) are not throttled by
        # it, on the framework's routes and on the lean ones alike.
        for _ in range(5):
            assert (await client.get(ME, headers=auth("ann"))).status_code == 200
            resp = await client.get("/api/v1/leaderboard/nope", headers=auth("ann"))
            assert_error(resp, 404, "competition_not_found")
        # /health is never limited.
        assert (await client.get("/health")).status_code == 200


async def test_the_limit_is_shared_by_processes(tmp_path: Path, redis_url: str) -> None:
    settings = limited(tmp_path, redis_url, user=4)
    async with (
        running_app(settings) as (_, first),
        running_app(settings, keep_keys=True) as (
            _,
            second,
        ),
    ):
        for client in (first, second, first, second):
            assert (await client.get(ME, headers=auth("ann"))).status_code == 200
        # Each process decides locally and tells Redis what it spent every flush
        # (HC_RATE_LIMIT_SYNC_MS, 50 ms): after one, both know the four.
        await asyncio.sleep(0.2)
        assert_error(await second.get(ME, headers=auth("ann")), 429)
        assert_error(await first.get(ME, headers=auth("ann")), 429)
        # Someone else is not affected in either.
        assert (await first.get(ME, headers=auth("bob"))).status_code == 200


async def test_the_lean_routes_spend_the_same_budget(tmp_path: Path, redis_url: str) -> None:
    async with running_app(limited(tmp_path, redis_url, user=3)) as (_, client):
        board = "/api/v1/leaderboard/nope?limit=10"
        assert_error(await client.get(board, headers=auth("ann")), 404)
        sync = {"date": "2026-11-02", "steps": 5}
        assert (await client.post(SYNC, json=sync, headers=auth("ann"))).status_code == 200
        assert (await client.get(ME, headers=auth("ann"))).status_code == 200
        assert_error(await client.get(board, headers=auth("ann")), 429, "rate_limited")
        assert_error(await client.post(SYNC, json=sync, headers=auth("ann")), 429)


async def test_the_bucket_refills(tmp_path: Path, redis_url: str) -> None:
    # 60 a minute: a burst of 60, then one a second.
    async with running_app(limited(tmp_path, redis_url, user=60)) as (app, client):
        ctx = app.state.ctx
        for _ in range(60):
            await ratelimit.check(ctx, "user", "ann", 60)
        resp = await client.get(ME, headers=auth("ann"))
        assert_error(resp, 429)
        assert resp.headers["retry-after"] == "1"
        await asyncio.sleep(1.1)
        assert (await client.get(ME, headers=auth("ann"))).status_code == 200
        assert_error(await client.get(ME, headers=auth("ann")), 429)


async def test_zero_turns_a_limit_off(tmp_path: Path, redis_url: str) -> None:
    async with running_app(limited(tmp_path, redis_url)) as (app, client):
        for _ in range(30):
            assert (await client.get(ME, headers=auth("ann"))).status_code == 200
        ctx = app.state.ctx
        assert not [k async for k in ctx.r.scan_iter(match=f"{ctx.settings.key_prefix}:rl:*")]


async def test_the_defaults_fit_a_phone_app_not_a_flood(tmp_path: Path, redis_url: str) -> None:
    """SPEC §4: a burst of about 100 passes, then a few a second; hundreds at once meet
    429 (600 requests in two seconds all passed with the old default)."""
    settings = make_settings(tmp_path, redis_url)
    assert (settings.rate_limit_user_per_minute, settings.rate_limit_user_burst) == (300, 100)
    async with running_app(settings) as (_, client):
        answers = [(await client.get(ME, headers=auth("flood"))).status_code for _ in range(130)]
        assert answers[:100] == [200] * 100
        assert answers.count(429) >= 25  # 5 a second refill: a few more may pass meanwhile
        assert (await client.get(ME, headers=auth("calm"))).status_code == 200


def test_a_burst_above_the_rate_is_the_rate() -> None:
    interval, tolerance = ratelimit._params(60, 100)
    assert (interval, tolerance) == (1_000_000, 59 * 1_000_000)  # 60 at once, one a second
    assert ratelimit._params(300, 100) == (200_000, 99 * 200_000)
