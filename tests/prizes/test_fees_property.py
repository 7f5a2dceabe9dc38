"""Refunds equal the fees owed, whatever the joins, leaves and fee edits before them."""

from __future__ import annotations

import itertools
from typing import Any

import httpx
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from tests.conftest import auth
from tests.domain.helpers import API, app_clock, at, comp_body

_ids = itertools.count()
step = st.tuples(st.sampled_from(["join", "leave", "fee"]), st.integers(0, 4), st.integers(0, 5000))


@hypothesis_settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=st.lists(step, max_size=16))
async def test_refunds_equal_the_fees_owed(
    client: httpx.AsyncClient, steps: list[tuple[str, int, int]]
) -> None:
    cid = f"fees{next(_ids)}"
    clock = app_clock(client)
    clock.at = at(2026, 11, 10)
    body = comp_body(
        cid, start_date="2026-11-20", end_date="2026-11-22", entry_fee_cents=500,
        min_participants=1000,  # too many ever to join: the fees are refunded
    )  # fmt: skip
    org = auth(f"{cid}-org")  # one organizer each: a user organizes at most 20 open ones
    resp = await client.post(f"{API}/competitions", json=body, headers=org)
    assert resp.status_code == 201, resp.text
    fee, owed = 500, {}
    for op, who, amount in steps:
        user = f"{cid}-u{who}"
        if op == "join":
            resp = await client.post(f"{API}/competitions/{cid}/join", headers=auth(user))
            assert resp.status_code == (409 if user in owed else 200), resp.text
            owed.setdefault(user, fee)  # a second join (already_joined) changes nothing
        elif op == "leave" and user in owed:
            resp = await client.post(f"{API}/competitions/{cid}/leave", headers=auth(user))
            assert resp.status_code == 200, resp.text
            del owed[user]
        elif op == "fee":
            resp = await client.patch(
                f"{API}/competitions/{cid}", json={"entry_fee_cents": amount}, headers=org
            )
            assert resp.status_code == 200, resp.text
            fee = amount  # for whoever joins from now on
    preview = await client.post(f"{API}/prizes/calculate/{cid}", headers=org)
    assert preview.json()["data"]["entry_fees_cents"] == sum(owed.values())
    clock.at = at(2026, 11, 28)
    resp = await client.post(f"{API}/prizes/distribute/{cid}", headers=org)
    assert resp.status_code == 200, resp.text
    data: dict[str, Any] = resp.json()["data"]
    assert data["outcome"] == "refunds" and data["entry_fees_cents"] == sum(owed.values())
    refunds = {line["user_id"]: line["amount_cents"] for line in data["lines"]}
    assert refunds == {user: cents for user, cents in owed.items() if cents > 0}
