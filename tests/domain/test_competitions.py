"""Competitions: create, validate, status over time, list, edit, join/leave, cancel."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx
import pytest

from healthcomp.competitions.schemas import Competition, CompetitionPage
from healthcomp.core.clock import FixedClock
from tests.conftest import SERVICE_AUTH, assert_error, auth
from tests.domain.helpers import (
    API,
    at,
    board,
    comp_body,
    create_comp,
    detail_fields,
    join,
    rec,
    standings,
    sync,
)

ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


# --- create ------------------------------------------------------------------------------


async def test_create_with_server_made_id(client: httpx.AsyncClient) -> None:
    resp = await client.post(
        f"{API}/competitions", json=comp_body(start_date="2026-11-05"), headers=auth("org")
    )
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["success"] is True
    comp = body["data"]
    assert ID_RE.fullmatch(comp["id"]) and len(comp["id"]) >= 8
    assert comp["created_by"] == "org"
    assert comp["status"] == "active" and comp["participant_count"] == 0
    assert comp["metric"] == "steps" and comp["format"] == "ranked"
    assert comp["currency"] == "USD" and comp["entry_fee_cents"] == 0
    assert comp["grace_hours"] == 24
    # It can be fetched back by that id.
    got = await client.get(f"{API}/competitions/{comp['id']}", headers=auth("someone"))
    assert got.status_code == 200 and got.json()["data"]["id"] == comp["id"]
    # Two bodies without id get two different ids.
    again = await create_comp(client)
    assert again["id"] != comp["id"]


async def test_create_with_given_id_and_duplicate(client: httpx.AsyncClient) -> None:
    comp = await create_comp(
        client, "nov-10k", name="  November   10k ", entry_fee_cents=500, currency="EUR"
    )
    assert comp["id"] == "nov-10k"
    assert comp["name"] == "November 10k"
    assert comp["entry_fee_cents"] == 500 and comp["currency"] == "EUR"
    assert comp["entry_fee_amount"] == "5.00"
    dup = await client.post(
        f"{API}/competitions",
        json=comp_body("nov-10k", name="other", start_date="2026-11-05"),
        headers=auth("other"),
    )
    assert_error(dup, 409, "competition_exists")
    # The first one is untouched.
    got = await client.get(f"{API}/competitions/nov-10k", headers=auth("org"))
    assert got.json()["data"]["name"] == "November 10k"
    assert got.json()["data"]["created_by"] == "org"
    listing = await client.get(f"{API}/competitions", headers=auth("org"))
    assert listing.json()["data"]["total_count"] == 1


async def test_service_creates(client: httpx.AsyncClient) -> None:
    resp = await client.post(f"{API}/competitions", json=comp_body("svc"), headers=SERVICE_AUTH)
    assert resp.status_code == 201, resp.text
    # Only the service (or the organizer it names) may manage it: a user may not. A
    # private competition answers an outsider as if it did not exist.
    resp = await client.post(f"{API}/competitions/svc/cancel", headers=auth("org"))
    assert_error(resp, 404, "competition_not_found")
    body = comp_body("pub", visibility="public")
    assert (await client.post(f"{API}/competitions", json=body, headers=SERVICE_AUTH)).is_success
    resp = await client.post(f"{API}/competitions/pub/cancel", headers=auth("org"))
    assert_error(resp, 403, "not_organizer")


INVALID_BODIES: list[tuple[str, dict[str, Any], set[str]]] = [
    ("unknown metric", {"metric": "floors"}, {"metric"}),
    ("negative fee", {"entry_fee_cents": -1}, {"entry_fee_cents"}),
    ("negative pool", {"prize_pool_cents": -100}, {"prize_pool_cents"}),
    ("float fee", {"entry_fee_cents": 12.5}, {"entry_fee_cents"}),
    ("float pool", {"prize_pool_cents": 0.01}, {"prize_pool_cents"}),
    ("lowercase currency", {"currency": "usd"}, {"currency"}),
    ("not a currency", {"currency": "XXX"}, {"currency"}),
    (
        "percentages sum",
        {"payout": {"scheme": "top_n", "percentages": [50, 30, 10]}},
        {"payout", "payout.percentages", "payout.top_n.percentages"},
    ),
    (
        "percentages growing down the places",
        {"payout": {"scheme": "top_n", "percentages": [30, 70]}},
        {"payout", "payout.percentages", "payout.top_n.percentages"},
    ),
    ("id with space", {"id": "a b"}, {"id"}),
    ("id too long", {"id": "a" * 65}, {"id"}),
    ("id with colon", {"id": "x:{c:y}"}, {"id"}),
    ("start backdated", {"start_date": "2026-10-01", "end_date": "2026-11-13"}, {"start_date"}),
    ("empty name", {"name": "   "}, {"name"}),
    ("grace over a week", {"grace_hours": 169}, {"grace_hours"}),
    ("rake over 100", {"rake_percent": 101}, {"rake_percent"}),
]

# Cross-field rules: the product rejects them (422) but see test_cross_field_names_field.
CROSS_FIELD: list[tuple[str, dict[str, Any], set[str]]] = [
    ("end before start", {"end_date": "2026-10-31"}, {"end_date", "start_date"}),
    (
        "min above max",
        {"min_participants": 5, "max_participants": 2},
        {"min_participants", "max_participants"},
    ),
    ("goal without goal", {"format": "goal"}, {"goal"}),
    ("qualifiers on ranked", {"payout": {"scheme": "qualifiers_split"}}, {"payout"}),
    (
        "window over 366 days",
        {"start_date": "2026-11-01", "end_date": "2027-11-02"},
        {"end_date", "start_date"},
    ),
]


@pytest.mark.parametrize(
    ("override", "fields"),
    [pytest.param(o, f, id=name) for name, o, f in INVALID_BODIES + CROSS_FIELD],
)
async def test_create_rejects_invalid(
    client: httpx.AsyncClient, override: dict[str, Any], fields: set[str]
) -> None:
    resp = await client.post(f"{API}/competitions", json=comp_body(**override), headers=auth())
    body = assert_error(resp, 422, "validation_error")
    assert body.get("details"), body
    listing = await client.get(f"{API}/competitions", headers=auth())
    assert listing.json()["data"]["total_count"] == 0


@pytest.mark.parametrize(
    ("override", "fields"),
    [pytest.param(o, f, id=name) for name, o, f in INVALID_BODIES],
)
async def test_create_invalid_names_field(
    client: httpx.AsyncClient, override: dict[str, Any], fields: set[str]
) -> None:
    resp = await client.post(f"{API}/competitions", json=comp_body(**override), headers=auth())
    assert_error(resp, 422)
    assert detail_fields(resp) & fields, resp.json()


@pytest.mark.parametrize(
    ("override", "fields"),
    [pytest.param(o, f, id=name) for name, o, f in CROSS_FIELD],
)
async def test_cross_field_names_field(
    client: httpx.AsyncClient, override: dict[str, Any], fields: set[str]
) -> None:
    resp = await client.post(f"{API}/competitions", json=comp_body(**override), headers=auth())
    assert_error(resp, 422)
    assert detail_fields(resp) & fields, resp.json()


async def test_valid_edge_bodies_accepted(client: httpx.AsyncClient) -> None:
    # 366 days is allowed, 367 is not (above); one-day window; min == max.
    c = await create_comp(client, "long", start_date="2026-11-01", end_date="2027-11-01")
    assert c["end_date"] == "2027-11-01"
    c = await create_comp(
        client,
        "one",
        start_date="2026-11-10",
        end_date="2026-11-10",
        min_participants=2,
        max_participants=2,
    )
    assert c["max_participants"] == 2
    c = await create_comp(
        client,
        "goal",
        format="goal",
        goal={"daily_target": 10000, "min_days": 20},
        payout={"scheme": "qualifiers_split"},
    )
    assert c["goal"] == {"daily_target": 10000, "min_days": 20}
    assert c["payout"] == {"scheme": "qualifiers_split"}
    c = await create_comp(client, "split", payout={"scheme": "top_n", "percentages": [70, 30]})
    assert c["payout"]["percentages"] == [70, 30]
    c = await create_comp(client, "a" * 64)
    assert c["id"] == "a" * 64


@pytest.mark.parametrize("bad", ["a b", "a" * 65, "x.y"])
async def test_bad_id_in_path(client: httpx.AsyncClient, bad: str) -> None:
    for method, suffix in (
        ("GET", ""),
        ("PATCH", ""),
        ("POST", "/join"),
        ("POST", "/leave"),
        ("POST", "/cancel"),
        ("GET", "/participants"),
    ):
        kwargs: dict[str, Any] = {"json": {"name": "n"}} if method == "PATCH" else {}
        resp = await client.request(
            method, f"{API}/competitions/{bad}{suffix}", headers=auth(), **kwargs
        )
        assert_error(resp, 422, "validation_error")
        assert "competition_id" in detail_fields(resp), (method, suffix, resp.text)
    resp = await client.get(f"{API}/leaderboard/{bad}", headers=auth())
    assert_error(resp, 422)


async def test_get_unknown_is_404(client: httpx.AsyncClient) -> None:
    assert_error(
        await client.get(f"{API}/competitions/nope", headers=auth()), 404, "competition_not_found"
    )
    assert_error(
        await client.post(f"{API}/competitions/nope/join", headers=auth()),
        404,
        "competition_not_found",
    )
    assert_error(
        await client.patch(f"{API}/competitions/nope", json={"name": "x"}, headers=auth()),
        404,
        "competition_not_found",
    )


async def test_no_token_is_401(client: httpx.AsyncClient) -> None:
    assert_error(await client.get(f"{API}/competitions"), 401)
    assert_error(await client.post(f"{API}/competitions", json=comp_body()), 401)


# --- status over time ----------------------------------------------------------------------


async def _status(client: httpx.AsyncClient, cid: str) -> str:
    resp = await client.get(f"{API}/competitions/{cid}", headers=auth())
    assert resp.status_code == 200, resp.text
    status: str = resp.json()["data"]["status"]
    return status


async def test_status_follows_the_clock(client: httpx.AsyncClient, clock: FixedClock) -> None:
    # Start 2026-11-12: its first day begins at UTC+14, i.e. 2026-11-11 10:00 UTC.
    # End 2026-11-13: its last day ends at UTC-12, i.e. 2026-11-14 12:00 UTC.
    await create_comp(client, "c", start_date="2026-11-12", end_date="2026-11-13")
    assert await _status(client, "c") == "upcoming"
    clock.at = at(2026, 11, 11, 9, 59, 59)
    assert await _status(client, "c") == "upcoming"
    clock.at = at(2026, 11, 11, 10, 0, 0)
    assert await _status(client, "c") == "active"
    clock.at = at(2026, 11, 14, 11, 59, 59)
    assert await _status(client, "c") == "active"
    clock.at = at(2026, 11, 14, 12, 0, 0)
    assert await _status(client, "c") == "ended"
    # Still ended (not finalized) long after, in grace and beyond.
    clock.at = at(2026, 12, 30)
    assert await _status(client, "c") == "ended"


async def test_status_edges_at_creation(client: httpx.AsyncClient, clock: FixedClock) -> None:
    # Now is 2026-11-10 12:00 UTC: a competition starting tomorrow has already begun at
    # UTC+14; one that ended yesterday is still running at UTC-12 until 12:00 today.
    await create_comp(client, "tomorrow", start_date="2026-11-11", end_date="2026-11-20")
    await create_comp(client, "day-after", start_date="2026-11-12", end_date="2026-11-20")
    now = clock.at
    clock.advance(days=-1)  # created while it still ran
    await create_comp(client, "ended-today", start_date="2026-11-01", end_date="2026-11-09")
    clock.at = now
    await create_comp(client, "yesterday-local", start_date="2026-11-01", end_date="2026-11-10")
    assert await _status(client, "tomorrow") == "active"
    assert await _status(client, "day-after") == "upcoming"
    # Ends at 2026-11-10 12:00 UTC, which is now: ended.
    assert await _status(client, "ended-today") == "ended"
    assert await _status(client, "yesterday-local") == "active"


async def test_cancelled_status(client: httpx.AsyncClient, clock: FixedClock) -> None:
    await create_comp(client, "c", start_date="2026-11-20", end_date="2026-11-25")
    resp = await client.post(
        f"{API}/competitions/c/cancel", json={"reason": "no interest"}, headers=auth("org")
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["data"]["status"] == "cancelled"
    clock.at = at(2026, 11, 22)
    assert await _status(client, "c") == "cancelled"
    clock.at = at(2026, 12, 30)
    assert await _status(client, "c") == "cancelled"


# --- list ----------------------------------------------------------------------------------


async def test_list_filter_and_paginate(client: httpx.AsyncClient, clock: FixedClock) -> None:
    made: dict[str, list[str]] = {"upcoming": [], "active": [], "ended": [], "cancelled": []}
    for i in range(2):
        await create_comp(
            client, f"up{i}", start_date="2026-11-20", end_date="2026-11-30", visibility="public"
        )
        made["upcoming"].append(f"up{i}")
        clock.advance(seconds=1)
    for i in range(5):
        await create_comp(client, f"act{i}", visibility="public")
        made["active"].append(f"act{i}")
        clock.advance(seconds=1)
    now = clock.at
    clock.at = at(2026, 10, 15)  # created while it ran
    await create_comp(
        client, "old", start_date="2026-10-01", end_date="2026-10-31", visibility="public"
    )
    clock.at = now
    made["ended"].append("old")
    await create_comp(client, "gone", visibility="public")
    resp = await client.post(f"{API}/competitions/gone/cancel", headers=auth("org"))
    assert resp.status_code == 200
    made["cancelled"].append("gone")

    everything = await client.get(f"{API}/competitions", params={"limit": 100}, headers=auth("x"))
    data = everything.json()["data"]
    assert data["total_count"] == 9
    assert sorted(c["id"] for c in data["items"]) == sorted(i for ids in made.values() for i in ids)

    for status, ids in made.items():
        seen: list[str] = []
        for offset in range(0, 6, 2):
            resp = await client.get(
                f"{API}/competitions",
                params={"status": status, "limit": 2, "offset": offset},
                headers=auth("x"),
            )
            assert resp.status_code == 200, resp.text
            page = resp.json()["data"]
            assert page["total_count"] == len(ids), (status, page)
            assert page["limit"] == 2 and page["offset"] == offset
            assert len(page["items"]) == max(0, min(2, len(ids) - offset))
            assert all(c["status"] == status for c in page["items"])
            seen.extend(c["id"] for c in page["items"])
        assert sorted(seen) == sorted(ids), status

    # Unfiltered pages: disjoint, complete.
    seen = []
    for offset in range(0, 9, 4):
        resp = await client.get(
            f"{API}/competitions", params={"limit": 4, "offset": offset}, headers=auth("x")
        )
        seen.extend(c["id"] for c in resp.json()["data"]["items"])
    assert sorted(seen) == sorted(i for ids in made.values() for i in ids)

    # The status filter follows the clock too.
    clock.at = at(2026, 11, 19, 10)
    resp = await client.get(f"{API}/competitions", params={"status": "upcoming"}, headers=auth())
    assert resp.json()["data"]["total_count"] == 0


async def test_list_rejects_bad_params(client: httpx.AsyncClient) -> None:
    for params in ({"status": "open"}, {"limit": 0}, {"limit": 101}, {"offset": -1}):
        assert_error(await client.get(f"{API}/competitions", params=params, headers=auth()), 422)


# --- edit ----------------------------------------------------------------------------------


async def test_patch_before_start(client: httpx.AsyncClient) -> None:
    await create_comp(client, "c", start_date="2026-11-20", end_date="2026-11-30")
    resp = await client.patch(
        f"{API}/competitions/c",
        json={"metric": "distance", "entry_fee_cents": 250, "name": "Renamed"},
        headers=auth("org"),
    )
    assert resp.status_code == 200, resp.text
    data = resp.json()["data"]
    assert data["metric"] == "distance" and data["entry_fee_cents"] == 250
    assert data["name"] == "Renamed"
    assert data["start_date"] == "2026-11-20"  # untouched fields stay

    resp = await client.patch(f"{API}/competitions/c", json={"name": "x"}, headers=auth("bob"))
    assert_error(resp, 404, "competition_not_found")  # private: bob is not in it
    await join(client, "c", "bob")
    resp = await client.patch(f"{API}/competitions/c", json={"name": "x"}, headers=auth("bob"))
    assert_error(resp, 403, "not_organizer")
    resp = await client.patch(
        f"{API}/competitions/c", json={"description": "by service"}, headers=SERVICE_AUTH
    )
    assert resp.status_code == 200, resp.text
    got = (await client.get(f"{API}/competitions/c", headers=auth())).json()["data"]
    assert got["description"] == "by service" and got["name"] == "Renamed"
    assert got["metric"] == "distance"


async def test_patch_after_start(client: httpx.AsyncClient) -> None:
    await create_comp(client, "c", entry_fee_cents=100)
    resp = await client.patch(f"{API}/competitions/c", json={"name": "New"}, headers=auth("org"))
    assert resp.status_code == 200, resp.text
    assert resp.json()["data"]["name"] == "New"
    for change in (
        {"metric": "calories"},
        {"entry_fee_cents": 0},
        {"end_date": "2026-11-29"},
        {"name": "Newer", "metric": "distance"},
    ):
        resp = await client.patch(f"{API}/competitions/c", json=change, headers=auth("org"))
        assert_error(resp, 409, "competition_started")
    got = (await client.get(f"{API}/competitions/c", headers=auth())).json()["data"]
    assert got["metric"] == "steps" and got["entry_fee_cents"] == 100
    assert got["name"] == "New" and got["end_date"] == "2026-11-30"


async def test_patch_invalid_merged_result(client: httpx.AsyncClient) -> None:
    await create_comp(
        client, "c", start_date="2026-11-20", end_date="2026-11-30", min_participants=3
    )
    for change in (
        {"end_date": "2026-11-19"},
        {"max_participants": 2},
        {"format": "goal"},
        {"currency": "usd"},
        {"metric": "floors"},
        {"payout": {"scheme": "top_n", "percentages": [90]}},
        {"name": None},
        {"id": "other"},
    ):
        resp = await client.patch(f"{API}/competitions/c", json=change, headers=auth("org"))
        assert_error(resp, 422)
    got = (await client.get(f"{API}/competitions/c", headers=auth())).json()["data"]
    assert got["end_date"] == "2026-11-30" and got["max_participants"] is None
    assert got["format"] == "ranked" and got["id"] == "c"


async def test_patch_cancelled_is_409(client: httpx.AsyncClient) -> None:
    await create_comp(client, "c", start_date="2026-11-20", end_date="2026-11-30")
    await client.post(f"{API}/competitions/c/cancel", headers=auth("org"))
    resp = await client.patch(f"{API}/competitions/c", json={"name": "x"}, headers=auth("org"))
    assert_error(resp, 409)


# --- join and leave ------------------------------------------------------------------------


async def test_join_twice_and_counts(client: httpx.AsyncClient) -> None:
    await create_comp(client, "c")
    resp = await client.post(f"{API}/competitions/c/join", headers=auth("a"))
    assert resp.status_code == 200, resp.text
    assert resp.json()["data"] == {"competition_id": "c", "user_id": "a", "participant_count": 1}
    resp = await client.post(f"{API}/competitions/c/join", headers=auth("a"))
    assert_error(resp, 409, "already_joined")
    resp = await client.post(f"{API}/competitions/c/join", headers=auth("b"))
    assert resp.json()["data"]["participant_count"] == 2
    got = (await client.get(f"{API}/competitions/c", headers=auth())).json()["data"]
    assert got["participant_count"] == 2


async def test_join_full(client: httpx.AsyncClient) -> None:
    await create_comp(client, "c", max_participants=2)
    await join(client, "c", "a", "b")
    assert_error(
        await client.post(f"{API}/competitions/c/join", headers=auth("c")), 409, "competition_full"
    )
    assert (await board(client, "c"))["total_count"] == 2
    # A place frees up when someone leaves.
    assert (await client.post(f"{API}/competitions/c/leave", headers=auth("a"))).status_code == 200
    await join(client, "c", "c")
    assert [u for u, _, _ in await standings(client, "c")] == ["b", "c"]


async def test_join_and_leave_after_end(client: httpx.AsyncClient, clock: FixedClock) -> None:
    await create_comp(client, "c", start_date="2026-11-05", end_date="2026-11-12")
    await join(client, "c", "a")
    clock.at = at(2026, 11, 13, 11, 59, 59)  # the last day is still running at UTC-12
    await join(client, "c", "b")
    clock.at = at(2026, 11, 13, 12, 0, 0)
    assert_error(
        await client.post(f"{API}/competitions/c/join", headers=auth("z")),
        409,
        "competition_ended",
    )
    assert_error(
        await client.post(f"{API}/competitions/c/leave", headers=auth("a")),
        409,
        "competition_ended",
    )
    assert (await board(client, "c"))["total_count"] == 2


async def test_join_upcoming_ok_and_cancelled_409(client: httpx.AsyncClient) -> None:
    await create_comp(client, "c", start_date="2026-12-01", end_date="2026-12-31")
    await join(client, "c", "a")
    await client.post(f"{API}/competitions/c/cancel", headers=auth("org"))
    assert_error(await client.post(f"{API}/competitions/c/join", headers=auth("b")), 409)
    assert_error(await client.post(f"{API}/competitions/c/leave", headers=auth("a")), 409)


async def test_leave(client: httpx.AsyncClient) -> None:
    await create_comp(client, "c")
    await join(client, "c", "a", "b", "c")
    assert_error(
        await client.post(f"{API}/competitions/c/leave", headers=auth("zed")),
        409,
        "not_joined",
    )
    await sync(client, "a", rec("2026-11-03", 5000))
    await sync(client, "b", rec("2026-11-03", 3000))
    assert await standings(client, "c") == [("a", 1, 5000), ("b", 2, 3000), ("c", 3, 0)]

    resp = await client.post(f"{API}/competitions/c/leave", headers=auth("a"))
    assert resp.status_code == 200, resp.text
    assert resp.json()["data"]["participant_count"] == 2
    data = await board(client, "c", "b")
    assert data["total_count"] == 2 and data["me"]["user_id"] == "b"
    # A private board is no longer a's to read.
    resp = await client.get(f"{API}/leaderboard/c", headers=auth("a"))
    assert_error(resp, 404, "competition_not_found")
    assert [(e["user_id"], e["rank"]) for e in data["entries"]] == [("b", 1), ("c", 2)]
    got = (await client.get(f"{API}/competitions/c", headers=auth())).json()["data"]
    assert got["participant_count"] == 2
    mine = (await client.get(f"{API}/users/a/competitions", headers=auth("a"))).json()["data"]
    assert mine["competitions"] == []
    # Leaving again: no longer a participant.
    assert_error(
        await client.post(f"{API}/competitions/c/leave", headers=auth("a")),
        409,
        "not_joined",
    )
    # The activity itself stays with the user; rejoining brings it back into the window.
    await join(client, "c", "a")
    assert await standings(client, "c") == [("a", 1, 5000), ("b", 2, 3000), ("c", 3, 0)]


async def test_join_on_behalf(client: httpx.AsyncClient) -> None:
    await create_comp(client, "c")
    resp = await client.post(
        f"{API}/competitions/c/join", json={"user_id": "carol"}, headers=SERVICE_AUTH
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["data"]["user_id"] == "carol"
    assert [u for u, _, _ in await standings(client, "c")] == ["carol"]
    # A user may name themself, not another.
    resp = await client.post(f"{API}/competitions/c/join", json={"user_id": "dan"}, headers=auth())
    assert_error(resp, 403)
    resp = await client.post(
        f"{API}/competitions/c/join", json={"user_id": "alice"}, headers=auth("alice")
    )
    assert resp.status_code == 200, resp.text
    resp = await client.post(
        f"{API}/competitions/c/leave", json={"user_id": "carol"}, headers=auth("alice")
    )
    assert_error(resp, 403)
    # A service call must name the user.
    assert_error(await client.post(f"{API}/competitions/c/join", headers=SERVICE_AUTH), 422)
    resp = await client.post(
        f"{API}/competitions/c/join", json={"user_id": "a b"}, headers=SERVICE_AUTH
    )
    assert_error(resp, 422)
    resp = await client.post(
        f"{API}/competitions/c/leave", json={"user_id": "carol"}, headers=SERVICE_AUTH
    )
    assert resp.status_code == 200, resp.text
    assert [u for u, _, _ in await standings(client, "c")] == ["alice"]


async def test_participants_access(client: httpx.AsyncClient) -> None:
    await create_comp(client, "c")
    await join(client, "c", "a", "b")
    await sync(client, "b", rec("2026-11-02", 100))
    for headers in (auth("a"), auth("org"), SERVICE_AUTH):
        resp = await client.get(f"{API}/competitions/c/participants", headers=headers)
        assert resp.status_code == 200, resp.text
        data = resp.json()["data"]
        assert [e["user_id"] for e in data["entries"]] == ["b", "a"]
        assert data["total_count"] == 2
    resp = await client.get(f"{API}/competitions/c/participants", headers=auth("outsider"))
    assert_error(resp, 404, "competition_not_found")
    resp = await client.get(
        f"{API}/competitions/c/participants", params={"limit": 1, "offset": 1}, headers=auth("a")
    )
    data = resp.json()["data"]
    assert [e["user_id"] for e in data["entries"]] == ["a"] and data["total_count"] == 2
    assert data["me"]["user_id"] == "a"


# --- cancel --------------------------------------------------------------------------------


async def test_cancel(client: httpx.AsyncClient) -> None:
    await create_comp(client, "c")
    await create_comp(client, "other")
    await join(client, "c", "a")
    await join(client, "other", "a")
    await sync(client, "a", rec("2026-11-02", 1000))

    assert_error(await client.post(f"{API}/competitions/c/cancel", headers=auth("a")), 403)
    resp = await client.post(
        f"{API}/competitions/c/cancel", json={"reason": "weather"}, headers=auth("org")
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["data"]["status"] == "cancelled"
    assert_error(await client.post(f"{API}/competitions/c/cancel", headers=auth("org")), 409)
    assert_error(await client.post(f"{API}/competitions/c/cancel", headers=SERVICE_AUTH), 409)

    # Syncs no longer change the cancelled board, but still reach the other competition.
    result = await sync(client, "a", rec("2026-11-02", 4000), rec("2026-11-03", 2000))
    assert [c["competition_id"] for c in result["competitions"]] == ["other"]
    assert result["competitions"][0]["score"] == 6000
    assert await standings(client, "c") == [("a", 1, 1000)]
    assert await standings(client, "other") == [("a", 1, 6000)]

    resp = await client.post(f"{API}/competitions/other/cancel", headers=SERVICE_AUTH)
    assert resp.status_code == 200 and resp.json()["data"]["status"] == "cancelled"
    assert_error(
        await client.post(f"{API}/competitions/nope/cancel", headers=SERVICE_AUTH),
        404,
        "competition_not_found",
    )


async def test_patch_max_below_participants(client: httpx.AsyncClient) -> None:
    await create_comp(client, "c", start_date="2026-11-20", end_date="2026-11-30")
    await join(client, "c", "a", "b", "c")
    resp = await client.patch(
        f"{API}/competitions/c", json={"max_participants": 2}, headers=auth("org")
    )
    assert_error(resp, 409)
    resp = await client.patch(
        f"{API}/competitions/c", json={"max_participants": 3}, headers=auth("org")
    )
    assert resp.status_code == 200, resp.text
    assert_error(
        await client.post(f"{API}/competitions/c/join", headers=auth("d")), 409, "competition_full"
    )


async def test_patch_window_before_start_rescores(client: httpx.AsyncClient) -> None:
    """Moving an upcoming competition's start earlier brings already-synced days in."""
    await create_comp(client, "c", start_date="2026-11-20", end_date="2026-11-30")
    await join(client, "c", "a")
    await sync(client, "a", rec("2026-11-05", 5000))
    resp = await client.patch(
        f"{API}/competitions/c", json={"start_date": "2026-11-01"}, headers=auth("org")
    )
    if resp.status_code != 200:  # refusing to move the start into the past is fine too
        assert_error(resp, resp.status_code)
        assert resp.status_code in (409, 422)
        return
    assert resp.json()["data"]["status"] == "active"
    assert await standings(client, "c") == [("a", 1, 5000)]


async def test_patch_metric_before_start_rescores(
    client: httpx.AsyncClient, clock: FixedClock
) -> None:
    # 08:00 UTC: a competition starting tomorrow has not begun anywhere yet; today's
    # activity (outside its window) is synced, then the window and metric change.
    clock.at = at(2026, 11, 10, 8)
    await create_comp(client, "c", start_date="2026-11-11", end_date="2026-11-20")
    assert await _status(client, "c") == "upcoming"
    await join(client, "c", "a")
    await sync(client, "a", rec("2026-11-10", 5000, distance=4000))
    assert await standings(client, "c") == [("a", 1, 0)]
    resp = await client.patch(
        f"{API}/competitions/c", json={"metric": "distance"}, headers=auth("org")
    )
    assert resp.status_code == 200, resp.text
    assert await standings(client, "c") == [("a", 1, 0)]
    resp = await client.patch(
        f"{API}/competitions/c", json={"start_date": "2026-11-10"}, headers=auth("org")
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["data"]["recount"] == {"state": "done", "done": 1, "total": 1}
    assert await standings(client, "c") == [("a", 1, 4000)]


async def test_concurrent_joins_respect_capacity(client: httpx.AsyncClient) -> None:
    await create_comp(client, "c", max_participants=3)
    users = [f"u{i}" for i in range(12)]
    resps = await asyncio.gather(
        *(client.post(f"{API}/competitions/c/join", headers=auth(u)) for u in users)
    )
    ok = [u for u, r in zip(users, resps, strict=True) if r.status_code == 200]
    assert len(ok) == 3
    for r in resps:
        if r.status_code != 200:
            assert_error(r, 409, "competition_full")
    assert sorted(r.json()["data"]["participant_count"] for r in resps if r.status_code == 200) == [
        1,
        2,
        3,
    ]
    assert sorted(u for u, _, _ in await standings(client, "c")) == sorted(ok)
    for user in users:
        resp = await client.get(f"{API}/users/{user}/competitions", headers=auth(user))
        listed = [c["competition_id"] for c in resp.json()["data"]["competitions"]]
        assert listed == (["c"] if user in ok else [])


async def test_competition_views_match_declared_schema(client: httpx.AsyncClient) -> None:
    created = await create_comp(client, "c")
    Competition.model_validate(created)
    resp = await client.get(f"{API}/competitions", headers=auth())
    CompetitionPage.model_validate(resp.json()["data"])


async def test_service_created_competition_has_no_user_organizer(client: httpx.AsyncClient) -> None:
    body = {
        "id": "svc",
        "name": "By a server",
        "start_date": "2026-11-01",
        "end_date": "2026-11-30",
    }
    resp = await client.post(f"{API}/competitions", headers=SERVICE_AUTH, json=body)
    assert resp.status_code == 201, resp.text
    assert resp.json()["data"]["created_by"] is None
    # A user whose id happens to be "service" is not its organizer.
    resp = await client.patch(
        f"{API}/competitions/svc", headers=auth("service"), json={"name": "Taken over"}
    )
    assert_error(resp, 404, "competition_not_found")
    resp = await client.patch(f"{API}/competitions/svc", headers=SERVICE_AUTH, json={"name": "Ok"})
    assert resp.status_code == 200, resp.text


async def test_a_competition_over_everywhere_cannot_be_created(client: httpx.AsyncClient) -> None:
    # The clock stands at 2026-11-10 12:00 UTC: 11-09 ended everywhere at 11-10 12:00 UTC.
    body = {"name": "Too late", "start_date": "2026-11-04", "end_date": "2026-11-09"}
    resp = await client.post(f"{API}/competitions", headers=auth("org"), json=body)
    assert "end_date" in {d["field"] for d in assert_error(resp, 422)["details"]}
    body["end_date"] = "2026-11-10"
    resp = await client.post(f"{API}/competitions", headers=auth("org"), json=body)
    assert resp.status_code == 201, resp.text


async def test_an_edit_cannot_move_a_competition_into_the_past(client: httpx.AsyncClient) -> None:
    await create_comp(client, "later", start_date="2026-12-01", end_date="2026-12-10")
    resp = await client.patch(
        f"{API}/competitions/later",
        headers=auth("org"),
        json={"start_date": "2026-11-01", "end_date": "2026-11-09"},
    )
    assert "end_date" in {d["field"] for d in assert_error(resp, 422)["details"]}
    got = (await client.get(f"{API}/competitions/later", headers=auth())).json()["data"]
    assert got["start_date"] == "2026-12-01" and got["status"] == "upcoming"
