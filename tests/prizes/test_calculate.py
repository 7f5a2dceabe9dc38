"""POST /api/v1/prizes/calculate/{id}: the payout preview, on the real Redis."""

from __future__ import annotations

from typing import Any

import httpx

from healthcomp.core.context import AppContext
from tests.conftest import SERVICE_AUTH, assert_error, auth
from tests.domain.helpers import API, create_comp, join, rec, sync

DAY = "2026-11-05"


async def preview(
    client: httpx.AsyncClient, cid: str, who: str = "org", body: Any = None
) -> dict[str, Any]:
    headers = SERVICE_AUTH if who == "service" else auth(who)
    resp = await client.post(f"{API}/prizes/calculate/{cid}", json=body, headers=headers)
    assert resp.status_code == 200, resp.text
    data: dict[str, Any] = resp.json()["data"]
    return data


async def field(client: httpx.AsyncClient, cid: str, steps: dict[str, int], **fields: Any) -> None:
    await create_comp(client, cid, **fields)
    await join(client, cid, *steps)
    for user, n in steps.items():
        if n:
            await sync(client, user, rec(DAY, n))


async def test_the_worked_example_ties_share_their_places(client: httpx.AsyncClient) -> None:
    # Pool 100.00, scores 50, 40, 40, 10, split 60/30/10: 60.00, 20.00, 20.00, 0.
    await field(client, "ex", {"a": 5000, "b": 4000, "c": 4000, "d": 1000}, prize_pool_cents=10000)
    data = await preview(client, "ex")
    assert [(p["user_id"], p["amount"], p["rank"], p["places"]) for p in data["prizes"]] == [
        ("a", "60.00", 1, [1, 1]),
        ("b", "20.00", 2, [2, 3]),
        ("c", "20.00", 2, [2, 3]),
    ]
    assert data["pool_cents"] == 10000 and data["outcome"] == "prizes"
    assert {p["status"] for p in data["prizes"]} == {"preview"} and data["final"] is False


async def test_the_pool_is_base_plus_fees_minus_rake(
    client: httpx.AsyncClient, ctx: AppContext
) -> None:
    steps = {"a": 3000, "b": 2000, "c": 1000, "d": 500}
    await field(client, "fees", steps, entry_fee_cents=1000, prize_pool_cents=500, rake_percent=2.5)
    data = await preview(client, "fees", "a")
    assert (data["entry_fees_cents"], data["rake_cents"], data["prize_pool_cents"]) == (
        4000,
        100,
        500,
    )
    assert data["pool_cents"] == 4400 and sum(p["amount_cents"] for p in data["prizes"]) == 4400
    # Whoever leaves owes no fee.
    resp = await client.post(f"{API}/competitions/fees/leave", headers=auth("d"))
    assert resp.status_code == 200, resp.text
    assert (await preview(client, "fees", "a"))["entry_fees_cents"] == 3000
    # A competition from before the running total: counted once from the records.
    await ctx.r.hdel(ctx.keys.meta("fees"), "fees")
    again = await preview(client, "fees", "a")
    assert again["entry_fees_cents"] == 3000 and again["pool_cents"] == 500 + 3000 - 75


async def test_another_pool_previewed_to_the_currencys_decimals(client: httpx.AsyncClient) -> None:
    await field(client, "usd", {"a": 10, "b": 10, "c": 10})
    data = await preview(client, "usd", body={"prize_pool": "0.01"})
    assert [p["amount_cents"] for p in data["prizes"]] == [1, 0, 0]
    assert data["prizes"][0]["user_id"] == "a" and data["pool_overridden"] is True
    for bad in ("0.001", "-1", "NaN", "1e30", " 5", "5_000", "\u0665", "+5", ".5", "5.", ""):
        resp = await client.post(
            f"{API}/prizes/calculate/usd", json={"prize_pool": bad}, headers=auth("org")
        )
        assert_error(resp, 422, "validation_error")
    await field(client, "yen", {"a": 10, "b": 10, "c": 10}, currency="JPY")
    data = await preview(client, "yen", body={"prize_pool": "1000"})
    assert sorted((p["amount"] for p in data["prizes"]), reverse=True) == ["334", "333", "333"]
    resp = await client.post(
        f"{API}/prizes/calculate/yen", json={"prize_pool": "100.5"}, headers=auth("org")
    )
    assert_error(resp, 422, "validation_error")


async def test_qualifiers_split_among_those_who_met_the_goal(client: httpx.AsyncClient) -> None:
    goal = {"daily_target": 1000, "min_days": 2}
    await create_comp(
        client, "goal", format="goal", goal=goal, payout={"scheme": "qualifiers_split"},
        prize_pool_cents=1000,
    )  # fmt: skip
    await join(client, "goal", "a", "b", "c")
    await sync(client, "a", rec("2026-11-03", 1500), rec("2026-11-04", 1200))
    await sync(client, "b", rec("2026-11-03", 1500), rec("2026-11-04", 2000), rec(DAY, 3000))
    await sync(client, "c", rec("2026-11-03", 5000))  # one day: not enough
    data = await preview(client, "goal")
    assert {p["user_id"]: p["amount_cents"] for p in data["prizes"]} == {"b": 500, "a": 500}


async def test_refunds_instead_of_prizes_say_why(client: httpx.AsyncClient) -> None:
    await field(client, "few", {"a": 100, "b": 50}, min_participants=3, entry_fee_cents=500)
    data = await preview(client, "few")
    assert (data["outcome"], data["refund_reason"], data["prizes"]) == (
        "refunds", "below_min_participants", [],
    )  # fmt: skip
    assert data["refunds_cents"] == 1000
    await field(client, "zero", {"y": 0, "z": 0}, prize_pool_cents=100)  # no days synced
    assert (await preview(client, "zero"))["refund_reason"] == "no_eligible_winner"
    resp = await client.post(
        f"{API}/competitions/zero/cancel", json={"reason": "rain"}, headers=auth("org")
    )
    assert resp.status_code == 200, resp.text
    assert (await preview(client, "zero"))["refund_reason"] == "cancelled"


async def test_who_may_preview(client: httpx.AsyncClient) -> None:
    await field(client, "priv", {"a": 100})
    await field(client, "pub", {"a": 100}, visibility="public")
    for who in ("a", "org", "service"):
        await preview(client, "priv", who)
    url = f"{API}/prizes/calculate"
    assert_error(
        await client.post(f"{url}/priv", headers=auth("stranger")), 404, "competition_not_found"
    )
    assert_error(await client.post(f"{url}/pub", headers=auth("stranger")), 403, "not_participant")
    assert_error(await client.post(f"{url}/priv"), 401)
    assert_error(await client.post(f"{url}/nope", headers=auth("a")), 404, "competition_not_found")
    assert_error(await client.post(f"{url}/bad:id", headers=auth("a")), 422)
    resp = await client.post(f"{url}/priv", json={"pool": 5}, headers=auth("a"))
    assert_error(resp, 422, "validation_error")
