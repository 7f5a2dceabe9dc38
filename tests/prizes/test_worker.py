"""The example payment worker: each payout paid once, whatever happens in between."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from typing import Any

import httpx
import pytest

from healthcomp.core.context import AppContext
from healthcomp.engine import writes
from healthcomp.prizes import worker
from tests.conftest import SERVICE_AUTH, TEST_SECRET, auth
from tests.domain.helpers import API, app_clock, at
from tests.prizes.test_distribute import setup_field


async def ledger_lines(client: httpx.AsyncClient, user: str) -> list[dict[str, Any]]:
    resp = await client.get(f"{API}/prizes/history/{user}", headers=SERVICE_AUTH)
    items: list[dict[str, Any]] = resp.json()["data"]["items"]
    return items


async def finalized(client: httpx.AsyncClient, cid: str) -> None:
    await setup_field(client, cid, {"a": 300, "b": 200, "c": 100}, prize_pool_cents=600)
    app_clock(client).at = at(2026, 12, 5)
    resp = await client.post(f"{API}/prizes/distribute/{cid}", headers=auth("org"))
    assert resp.status_code == 200, resp.text


async def test_run_twice_pays_each_payout_once(client: httpx.AsyncClient, ctx: AppContext) -> None:
    await finalized(client, "pay")
    pay = worker.demo_provider(ctx)
    assert await worker.run_once(ctx, pay, "w1") == {"paid": 3}
    assert await worker.run_once(ctx, pay, "w1") == {}
    assert await worker.run_once(ctx, pay, "w2") == {}
    line = (await ledger_lines(client, "a"))[0]
    assert line["status"] == "paid" and line["payment_ref"].startswith("demo-")
    assert line["settled_at"].endswith("Z")
    assert await ctx.r.hlen(ctx.keys.demo_payments()) == 3


async def test_a_crash_between_paying_and_recording_pays_once(
    client: httpx.AsyncClient, ctx: AppContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    await finalized(client, "crash2")
    calls: list[str] = []
    demo = worker.demo_provider(ctx)

    async def pay(line: dict[str, Any]) -> tuple[str, str]:
        calls.append(line["id"])
        return await demo(line)

    real = writes.settle_payout

    async def dies(*args: Any, **kwargs: Any) -> str:
        raise RuntimeError("killed after paying, before recording")

    monkeypatch.setattr(writes, "settle_payout", dies)
    with pytest.raises(RuntimeError):
        await worker.run_once(ctx, pay, "w1")
    first_ref = await ctx.r.hget(ctx.keys.demo_payments(), calls[0])
    monkeypatch.setattr(writes, "settle_payout", real)
    assert await worker.run_once(ctx, pay, "w1") == {"paid": 3}
    # The interrupted payout was asked again with the same key: one payment.
    assert calls.count(calls[0]) == 2 and await ctx.r.hlen(ctx.keys.demo_payments()) == 3
    paid = {
        x["id"]: x["payment_ref"] for u in ("a", "b", "c") for x in await ledger_lines(client, u)
    }
    assert paid[calls[0]] == first_ref and len(paid) == 3


async def test_a_refused_payment_is_failed_and_a_cancel_is_refunded(
    client: httpx.AsyncClient, ctx: AppContext
) -> None:
    await setup_field(client, "gone2", {"x": 10, "y": 10}, entry_fee_cents=250)
    resp = await client.post(f"{API}/competitions/gone2/cancel", headers=auth("org"))
    assert resp.status_code == 200, resp.text

    async def refuses_y(line: dict[str, Any]) -> tuple[str, str]:
        return ("failed", "card expired") if line["user_id"] == "y" else ("paid", "ref-1")

    assert await worker.run_once(ctx, refuses_y, "w1") == {"paid": 1, "failed": 1}
    statuses = {u: (await ledger_lines(client, u))[0]["status"] for u in ("x", "y")}
    assert statuses == {"x": "paid", "y": "failed"}


async def test_the_command_pays_with_the_demo_provider(
    client: httpx.AsyncClient, ctx: AppContext, redis_url: str, tmp_path: Any
) -> None:
    """`healthcomp payouts --once`, a process of its own on the same Redis and prefix."""
    await finalized(client, "cli")
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "HC_KEY_PREFIX": ctx.settings.key_prefix,
        "SUPABASE_JWT_SECRET": TEST_SECRET,
        "HC_DATA_DIR": str(tmp_path),
    }
    command = [sys.executable, "-m", "healthcomp", "payouts", "--once"]
    out = await asyncio.to_thread(
        subprocess.run, command, env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "3 paid"
    again = await asyncio.to_thread(
        subprocess.run, command, env=env, capture_output=True, text=True, timeout=60
    )
    assert again.stdout.strip() == "nothing to pay"
    assert {x["status"] for x in await ledger_lines(client, "a")} == {"paid"}
