"""Access and privacy (SPEC §3, issue #6): who sees a competition and what of it,
the listing, the organizer's cap of open competitions, and backdating."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from healthcomp.core.clock import FixedClock
from tests.conftest import SERVICE_AUTH, assert_error, auth
from tests.domain.helpers import API, at, comp_body, create_comp, join, rec, sync

NOW = at(2026, 11, 10, 12)


def _same_404(resp: httpx.Response, cid: str, unknown: httpx.Response, unknown_id: str) -> None:
    """`resp` is the unknown-id 404, word for word once the ids are swapped."""
    body = assert_error(resp, 404, "competition_not_found")
    other = assert_error(unknown, 404, "competition_not_found")
    assert body["message"].replace(cid, "<id>") == other["message"].replace(unknown_id, "<id>")
    assert {k: v for k, v in body.items() if k != "message"} == {
        k: v for k, v in other.items() if k != "message"
    }


def _views(cid: str, user: str) -> list[tuple[str, dict[str, str]]]:
    """Every read of a competition's members and their activity."""
    return [
        (f"{API}/leaderboard/{cid}", {}),
        (f"{API}/leaderboard/{cid}", {"around": "me"}),
        (f"{API}/leaderboard/{cid}", {"around": user}),
        (f"{API}/competitions/{cid}/participants", {}),
        (f"{API}/competitions/{cid}/audit", {}),
        (f"{API}/fitness/stats/{user}", {"competition_id": cid}),
        (f"{API}/fitness/history/{user}", {"competition_id": cid}),
    ]


# --- visibility ------------------------------------------------------------------------------


async def test_private_competition_is_unknown_to_outsiders(client: httpx.AsyncClient) -> None:
    created = await create_comp(client, "priv")
    assert created["visibility"] == "private"
    await join(client, "priv", "a", "b")
    await sync(client, "a", rec("2026-11-02", 700))
    await sync(client, "b", rec("2026-11-03", 300))
    # The outsider has a board entry elsewhere and activity of their own.
    await create_comp(client, "elsewhere")
    await join(client, "elsewhere", "outsider")
    await sync(client, "outsider", rec("2026-11-02", 50))

    for (url, params), (unknown_url, unknown_params) in zip(
        _views("priv", "a"), _views("nope", "a"), strict=True
    ):
        resp = await client.get(url, params=params, headers=auth("outsider"))
        unknown = await client.get(unknown_url, params=unknown_params, headers=auth("outsider"))
        _same_404(resp, "priv", unknown, "nope")
        for viewer in ("a", "b", "org"):
            if "around" in params and params["around"] == "me" and viewer == "org":
                continue  # the organizer is not on the board
            resp = await client.get(url, params=params, headers=auth(viewer))
            assert resp.status_code == 200, (url, params, viewer, resp.text)
        if params.get("around") != "me":
            resp = await client.get(url, params=params, headers=SERVICE_AUTH)
            assert resp.status_code == 200, (url, params, resp.text)

    # around=<user> tells an outsider nothing about who is in it: a participant and
    # someone who is not get the same answer.
    for target in ("a", "outsider", "ghost"):
        resp = await client.get(
            f"{API}/leaderboard/priv", params={"around": target}, headers=auth("outsider")
        )
        unknown = await client.get(
            f"{API}/leaderboard/nope", params={"around": target}, headers=auth("outsider")
        )
        _same_404(resp, "priv", unknown, "nope")
    # A participant may ask around anyone; someone not on the board is not found.
    resp = await client.get(
        f"{API}/leaderboard/priv", params={"around": "outsider"}, headers=auth("b")
    )
    assert_error(resp, 404, "participant_not_found")

    # What the participants and the organizer see.
    for viewer in ("a", "b", "org"):
        resp = await client.get(f"{API}/leaderboard/priv", headers=auth(viewer))
        entries = resp.json()["data"]["entries"]
        assert [(e["user_id"], e["rank"], e["score"]) for e in entries] == [
            ("a", 1, 700),
            ("b", 2, 300),
        ]


async def test_private_competition_after_leaving(client: httpx.AsyncClient) -> None:
    """Someone who left is an outsider again."""
    await create_comp(client, "priv")
    await join(client, "priv", "a", "b")
    resp = await client.post(f"{API}/competitions/priv/leave", headers=auth("b"))
    assert resp.status_code == 200, resp.text
    for url, params in _views("priv", "a"):
        resp = await client.get(url, params=params, headers=auth("b"))
        assert_error(resp, 404, "competition_not_found")


async def test_public_competition(client: httpx.AsyncClient) -> None:
    created = await create_comp(client, "pub", visibility="public")
    assert created["visibility"] == "public"
    await join(client, "pub", "a", "b")
    await sync(client, "a", rec("2026-11-02", 700))

    resp = await client.get(f"{API}/leaderboard/pub", headers=auth("outsider"))
    assert resp.status_code == 200, resp.text
    data = resp.json()["data"]
    assert [(e["user_id"], e["rank"], e["score"]) for e in data["entries"]] == [
        ("a", 1, 700),
        ("b", 2, 0),
    ]
    assert data["total_count"] == 2 and data["me"] is None
    resp = await client.get(
        f"{API}/leaderboard/pub", params={"around": "b", "limit": 1}, headers=auth("outsider")
    )
    assert [e["user_id"] for e in resp.json()["data"]["entries"]] == ["b"]

    # The participants list and the audit trail stay with the members.
    for path in ("participants", "audit"):
        resp = await client.get(f"{API}/competitions/pub/{path}", headers=auth("outsider"))
        assert_error(resp, 403, "not_participant")
        for headers in (auth("a"), auth("org"), SERVICE_AUTH):
            resp = await client.get(f"{API}/competitions/pub/{path}", headers=headers)
            assert resp.status_code == 200, resp.text
    resp = await client.get(f"{API}/competitions/pub/participants", headers=auth("b"))
    assert [e["user_id"] for e in resp.json()["data"]["entries"]] == ["a", "b"]
    # Stats and history through it: the members' days stay with the members.
    for kind in ("stats", "history"):
        resp = await client.get(
            f"{API}/fitness/{kind}/a", params={"competition_id": "pub"}, headers=auth("outsider")
        )
        assert_error(resp, 403, "not_participant")
        resp = await client.get(
            f"{API}/fitness/{kind}/a", params={"competition_id": "pub"}, headers=auth("b")
        )
        assert resp.status_code == 200, resp.text

    # Made private: the outsider no longer sees the board.
    resp = await client.patch(
        f"{API}/competitions/pub", json={"visibility": "private"}, headers=auth("org")
    )
    assert resp.status_code == 200, resp.text
    resp = await client.get(f"{API}/leaderboard/pub", headers=auth("outsider"))
    assert_error(resp, 404, "competition_not_found")
    resp = await client.get(f"{API}/competitions/pub/participants", headers=auth("outsider"))
    assert_error(resp, 404, "competition_not_found")


async def test_history_through_a_competition(client: httpx.AsyncClient) -> None:
    await create_comp(client, "w", start_date="2026-11-04", end_date="2026-11-10")
    await join(client, "w", "a", "b")
    await sync(
        client,
        "a",
        rec("2026-11-01", 100),
        rec("2026-11-04", 4000, distance=3000),
        rec("2026-11-04", 5000, source="watch", calories=200),
        rec("2026-11-06", 6000),
        rec("2026-11-11", 900),
    )
    params = {"competition_id": "w", "from": "2026-10-01", "to": "2026-11-11"}
    for viewer in ("b", "org"):
        resp = await client.get(f"{API}/fitness/history/a", params=params, headers=auth(viewer))
        assert resp.status_code == 200, resp.text
        data = resp.json()["data"]
        assert (data["from"], data["to"]) == ("2026-11-04", "2026-11-10")
        assert [
            (d["date"], d["steps"], d["distance"], d["calories"], d["sources"])
            for d in data["days"]
        ] == [("2026-11-04", 5000, 3000, 200, {}), ("2026-11-06", 6000, 0, 0, {})]
        resp = await client.get(
            f"{API}/fitness/stats/a", params={"competition_id": "w"}, headers=auth(viewer)
        )
        assert resp.status_code == 200, resp.text
        stats = resp.json()["data"]
        assert stats["totals"]["steps"] == 11000
        assert stats["competition"]["score"] == 11000

    # The user themself sees every source, through the competition or not.
    resp = await client.get(f"{API}/fitness/history/a", params=params, headers=auth("a"))
    days = resp.json()["data"]["days"]
    assert [d["date"] for d in days] == ["2026-11-04", "2026-11-06"]
    assert {s: v["steps"] for s, v in days[0]["sources"].items()} == {"phone": 4000, "watch": 5000}
    resp = await client.get(
        f"{API}/fitness/history/a",
        params={"from": "2026-10-01", "to": "2026-11-11"},
        headers=auth("a"),
    )
    days = resp.json()["data"]["days"]
    assert [d["date"] for d in days] == ["2026-11-01", "2026-11-04", "2026-11-06", "2026-11-11"]
    assert set(days[1]["sources"]) == {"phone", "watch"}
    # Without naming the competition, a co-participant sees nothing at all.
    resp = await client.get(
        f"{API}/fitness/history/a", params={"from": "2026-10-01"}, headers=auth("b")
    )
    assert_error(resp, 403)


# --- listing ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    cid: str
    owner: str
    public: bool
    start: str
    end: str
    created: datetime
    cancelled: datetime | None = None
    joiners: tuple[str, ...] = ()

    def status(self) -> str:
        if self.cancelled is not None:
            return "cancelled"
        if self.start >= "2026-11-12":  # its first day has begun nowhere yet
            return "upcoming"
        if self.end >= "2026-11-10":  # its last day is not over everywhere yet
            return "active"
        return "ended"


def _h(month: int, day: int, hour: int) -> datetime:
    return at(2026, month, day, hour)


SPECS = [
    # upcoming
    Spec("u-pub1", "host", True, "2026-11-20", "2026-11-30", _h(11, 1, 1)),
    Spec("u-pub2", "host", True, "2026-11-14", "2026-11-30", _h(11, 2, 1)),
    Spec("u-org", "org", False, "2026-11-17", "2026-11-30", _h(11, 3, 1)),
    Spec("u-join", "other", False, "2026-11-15", "2026-11-25", _h(11, 4, 1), joiners=("alice",)),
    Spec("u-foreign", "other", False, "2026-11-16", "2026-11-25", _h(11, 5, 1), joiners=("zed",)),
    Spec("u-pub3", "host", True, "2026-11-22", "2026-11-30", _h(11, 6, 1), joiners=("alice",)),
    # active
    Spec("a-pub1", "host", True, "2026-11-05", "2026-11-30", _h(11, 4, 2), joiners=("alice",)),
    Spec("a-pub2", "host", True, "2026-11-06", "2026-11-12", _h(11, 5, 2)),
    Spec("a-org", "org", False, "2026-11-07", "2026-11-20", _h(11, 6, 2)),
    Spec("a-join", "other", False, "2026-11-08", "2026-11-15", _h(11, 7, 2), joiners=("alice",)),
    Spec("a-foreign", "other", False, "2026-11-09", "2026-11-18", _h(11, 8, 2)),
    Spec("a-alice", "alice", False, "2026-11-10", "2026-11-28", _h(11, 9, 2)),
    # ended
    Spec("e-pub1", "host", True, "2026-10-01", "2026-10-31", _h(10, 5, 3)),
    Spec("e-pub2", "host", True, "2026-10-10", "2026-11-05", _h(10, 6, 3)),
    Spec("e-org", "org", False, "2026-10-15", "2026-11-03", _h(10, 10, 3)),
    Spec("e-join", "other", False, "2026-10-20", "2026-11-07", _h(10, 20, 3), joiners=("alice",)),
    Spec("e-foreign", "other", False, "2026-10-21", "2026-11-02", _h(10, 21, 3)),
    # cancelled
    Spec("c-pub1", "host", True, "2026-11-20", "2026-11-30", _h(10, 22, 4), _h(11, 9, 1)),
    Spec("c-org", "org", False, "2026-11-21", "2026-11-30", _h(10, 23, 4), _h(11, 9, 3)),
    Spec(
        "c-join",
        "other",
        False,
        "2026-11-22",
        "2026-11-30",
        _h(10, 24, 4),
        _h(11, 9, 2),
        joiners=("alice",),
    ),
    Spec("c-foreign", "other", False, "2026-11-23", "2026-11-30", _h(10, 25, 4), _h(11, 9, 4)),
    Spec("c-pub2", "host", True, "2026-11-24", "2026-11-30", _h(10, 26, 4), _h(11, 9, 5)),
]


def _expected_order(specs: list[Spec], status: str | None) -> list[str]:
    """The documented orders, computed from the specs (no two keys tie)."""
    chosen = [s for s in specs if status is None or s.status() == status]
    if status is None:
        key: Any = lambda s: s.created  # noqa: E731
        reverse = True
    elif status == "upcoming":
        key, reverse = (lambda s: s.start), False
    elif status == "active":
        key, reverse = (lambda s: s.end), False
    elif status == "ended":
        key, reverse = (lambda s: s.end), True
    else:
        key, reverse = (lambda s: s.cancelled), True
    keys = [key(s) for s in chosen]
    assert len(set(keys)) == len(keys), "the specs must not tie"
    return [s.cid for s in sorted(chosen, key=key, reverse=reverse)]


async def _seed_listing(client: httpx.AsyncClient, clock: FixedClock) -> None:
    events: list[tuple[datetime, str, Spec]] = []
    for s in SPECS:
        events.append((s.created, "create", s))
        if s.cancelled is not None:
            events.append((s.cancelled, "cancel", s))
    for when, what, s in sorted(events, key=lambda e: (e[0], e[1])):
        clock.at = when
        if what == "create":
            body = comp_body(
                s.cid,
                start_date=s.start,
                end_date=s.end,
                visibility="public" if s.public else "private",
            )
            resp = await client.post(f"{API}/competitions", json=body, headers=auth(s.owner))
            assert resp.status_code == 201, resp.text
            await join(client, s.cid, *s.joiners)
        else:
            resp = await client.post(f"{API}/competitions/{s.cid}/cancel", headers=auth(s.owner))
            assert resp.status_code == 200, resp.text
    clock.at = NOW
    # The statuses the specs say are the ones the API shows.
    for s in SPECS:
        resp = await client.get(f"{API}/competitions/{s.cid}", headers=SERVICE_AUTH)
        assert resp.json()["data"]["status"] == s.status(), s.cid


def _visible_to(viewer: str | None) -> list[Spec]:
    if viewer is None:
        return list(SPECS)
    return [s for s in SPECS if s.public or s.owner == viewer or viewer in s.joiners]


async def _walk(
    client: httpx.AsyncClient, headers: dict[str, str], status: str | None, limit: int
) -> tuple[list[str], set[int]]:
    """Every page of a listing, in order, and the totals they announced."""
    seen: list[str] = []
    totals: set[int] = set()
    offset = 0
    while True:
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if status is not None:
            params["status"] = status
        resp = await client.get(f"{API}/competitions", params=params, headers=headers)
        assert resp.status_code == 200, resp.text
        page = resp.json()["data"]
        assert (page["limit"], page["offset"]) == (limit, offset)
        totals.add(page["total_count"])
        ids = [c["id"] for c in page["items"]]
        if status is not None:
            assert {c["status"] for c in page["items"]} <= {status}
        seen.extend(ids)
        if len(ids) < limit:
            return seen, totals
        offset += limit


async def test_listing_visibility_order_and_pages(
    client: httpx.AsyncClient, clock: FixedClock
) -> None:
    await _seed_listing(client, clock)
    viewers: dict[str | None, dict[str, str]] = {
        None: SERVICE_AUTH,
        "alice": auth("alice"),
        "org": auth("org"),
        "bob": auth("bob"),
        "zed": auth("zed"),
    }
    for viewer, headers in viewers.items():
        visible = _visible_to(viewer)
        for status in (None, "upcoming", "active", "ended", "cancelled", "finalized"):
            expected = _expected_order(visible, status)
            for limit in (1, 2, 3, 5, 100):
                seen, totals = await _walk(client, headers, status, limit)
                assert seen == expected, (viewer, status, limit)
                assert totals == {len(expected)}, (viewer, status, limit)
    # Nobody sees another's private competition, whatever the page.
    resp = await client.get(f"{API}/competitions", params={"limit": 100}, headers=auth("bob"))
    assert {c["visibility"] for c in resp.json()["data"]["items"]} == {"public"}
    # A page past the end is empty and still counts them all.
    resp = await client.get(
        f"{API}/competitions", params={"limit": 5, "offset": 50}, headers=auth("alice")
    )
    page = resp.json()["data"]
    assert page["items"] == [] and page["total_count"] == len(_visible_to("alice"))


async def test_listing_follows_the_clock_and_joins(
    client: httpx.AsyncClient, clock: FixedClock
) -> None:
    await _seed_listing(client, clock)

    async def ids(viewer: str, status: str) -> list[str]:
        resp = await client.get(
            f"{API}/competitions", params={"status": status, "limit": 100}, headers=auth(viewer)
        )
        assert resp.status_code == 200, resp.text
        return [c["id"] for c in resp.json()["data"]["items"]]

    # Joining a private competition puts it in the joiner's listing; leaving takes it out.
    await join(client, "a-foreign", "bob")
    assert await ids("bob", "active") == ["a-pub2", "a-foreign", "a-pub1"]
    resp = await client.post(f"{API}/competitions/a-foreign/leave", headers=auth("bob"))
    assert resp.status_code == 200, resp.text
    assert await ids("bob", "active") == ["a-pub2", "a-pub1"]
    # A day later: a-pub2 (ends 11-12) has moved from active to ended, u-pub2 (starts
    # 11-14) is active.
    clock.at = at(2026, 11, 13, 12)
    # (a-pub1 and u-pub2 both end on 2026-11-30: by id)
    assert await ids("alice", "active") == ["a-join", "a-alice", "a-pub1", "u-pub2"]
    assert await ids("alice", "ended") == ["a-pub2", "e-join", "e-pub2", "e-pub1"]
    assert await ids("alice", "upcoming") == ["u-join", "u-pub1", "u-pub3"]


async def test_joined_cancelled_competition_stays_listed(
    client: httpx.AsyncClient, clock: FixedClock
) -> None:
    """A participant keeps seeing a private competition they joined after it is
    cancelled, also once they synced again."""
    await create_comp(client, "p", start_date="2026-11-05", end_date="2026-11-20")
    await join(client, "p", "alice")
    await sync(client, "alice", rec("2026-11-06", 100))
    resp = await client.post(f"{API}/competitions/p/cancel", headers=auth("org"))
    assert resp.status_code == 200, resp.text
    await sync(client, "alice", rec("2026-11-07", 200))
    resp = await client.get(
        f"{API}/competitions", params={"status": "cancelled"}, headers=auth("alice")
    )
    assert [c["id"] for c in resp.json()["data"]["items"]] == ["p"]
    resp = await client.get(f"{API}/leaderboard/p", headers=auth("alice"))
    assert resp.status_code == 200, resp.text
    assert [(e["user_id"], e["score"]) for e in resp.json()["data"]["entries"]] == [("alice", 100)]


# --- the organizer's cap --------------------------------------------------------------------


async def _create(
    client: httpx.AsyncClient, cid: str, headers: dict[str, str], **fields: Any
) -> httpx.Response:
    body = comp_body(cid, **{"start_date": "2026-11-20", "end_date": "2026-11-30", **fields})
    return await client.post(f"{API}/competitions", json=body, headers=headers)


async def test_organizer_cap(client: httpx.AsyncClient, clock: FixedClock) -> None:
    for i in range(20):
        end = "2026-11-12" if i == 1 else "2026-11-30"
        resp = await _create(client, f"c{i}", auth("org"), start_date="2026-11-11", end_date=end)
        assert resp.status_code == 201, resp.text
    assert_error(await _create(client, "c20", auth("org")), 409, "too_many_competitions")
    # Per organizer; the service role has no cap.
    assert (await _create(client, "o1", auth("org2"))).status_code == 201
    for i in range(3):
        assert (await _create(client, f"s{i}", SERVICE_AUTH)).status_code == 201
    assert_error(await _create(client, "c20", auth("org")), 409, "too_many_competitions")

    # Cancelling one frees a slot, once.
    resp = await client.post(f"{API}/competitions/c0/cancel", headers=auth("org"))
    assert resp.status_code == 200, resp.text
    assert (await _create(client, "c20", auth("org"))).status_code == 201
    assert_error(await _create(client, "c21", auth("org")), 409, "too_many_competitions")

    # One that is over (c1 ended at 2026-11-13 12:00 UTC everywhere) frees one too.
    clock.at = at(2026, 11, 13, 11, 59)
    assert_error(await _create(client, "c21", auth("org")), 409, "too_many_competitions")
    clock.at = at(2026, 11, 13, 12)
    assert (await _create(client, "c21", auth("org"))).status_code == 201
    assert_error(await _create(client, "c22", auth("org")), 409, "too_many_competitions")

    # The service lists exactly the ones that were created.
    resp = await client.get(f"{API}/competitions", params={"limit": 100}, headers=SERVICE_AUTH)
    created = sorted(c["id"] for c in resp.json()["data"]["items"])
    assert created == sorted([f"c{i}" for i in range(22)] + ["o1", "s0", "s1", "s2"]), created


async def test_cap_not_fooled_by_a_duplicate_id(client: httpx.AsyncClient) -> None:
    """Creating an id that already exists changes nothing about the slots."""
    for i in range(20):
        resp = await _create(client, f"c{i}", auth("org"))
        assert resp.status_code == 201, resp.text
    resp = await client.post(f"{API}/competitions/c0/cancel", headers=auth("org"))
    assert resp.status_code == 200, resp.text
    # c0 is cancelled: re-creating its id is refused and does not take its slot back.
    assert_error(await _create(client, "c0", auth("org")), 409, "competition_exists")
    # An open one "re-created" with an earlier end does not shorten its hold on a slot.
    assert_error(
        await _create(client, "c5", auth("org"), end_date="2026-11-21"), 409, "competition_exists"
    )
    assert (await _create(client, "fresh", auth("org"))).status_code == 201
    assert_error(await _create(client, "more", auth("org")), 409, "too_many_competitions")


async def test_cap_holds_under_concurrent_creates(client: httpx.AsyncClient) -> None:
    resps = await asyncio.gather(*(_create(client, f"c{i}", auth("org")) for i in range(30)))
    made = [r for r in resps if r.status_code == 201]
    assert len(made) == 20
    for r in resps:
        if r.status_code != 201:
            assert_error(r, 409, "too_many_competitions")
    resp = await client.get(f"{API}/competitions", params={"limit": 100}, headers=auth("org"))
    listed = sorted(c["id"] for c in resp.json()["data"]["items"])
    assert listed == sorted(r.json()["data"]["id"] for r in made)
    assert_error(await _create(client, "late", auth("org")), 409, "too_many_competitions")


async def test_cap_setting(client: httpx.AsyncClient, settings: Any) -> None:
    settings.max_open_competitions = 2
    assert (await _create(client, "a", auth("org"))).status_code == 201
    assert (await _create(client, "b", auth("org"))).status_code == 201
    assert_error(await _create(client, "c", auth("org")), 409, "too_many_competitions")


# --- backdating ----------------------------------------------------------------------------


async def test_backdating_on_create(client: httpx.AsyncClient) -> None:
    # Created 2026-11-10 12:00 UTC: the window may start on 2026-11-03, not before.
    resp = await client.post(
        f"{API}/competitions", json=comp_body("ok", start_date="2026-11-03"), headers=auth("org")
    )
    assert resp.status_code == 201, resp.text
    resp = await client.post(
        f"{API}/competitions", json=comp_body("old", start_date="2026-11-02"), headers=auth("org")
    )
    body = assert_error(resp, 422, "validation_error")
    assert [d["field"] for d in body["details"]] == ["start_date"]
    # The service role imports an older challenge.
    resp = await client.post(
        f"{API}/competitions",
        json=comp_body("import", start_date="2026-01-01", end_date="2026-12-31"),
        headers=SERVICE_AUTH,
    )
    assert resp.status_code == 201, resp.text
    assert resp.json()["data"]["start_date"] == "2026-01-01"


async def test_backdating_on_edit(client: httpx.AsyncClient, clock: FixedClock) -> None:
    await _create(client, "c", auth("org"))  # created 2026-11-10, starts 2026-11-20
    await _create(client, "d", auth("org"))
    await join(client, "c", "a")
    await sync(client, "a", rec("2025-12-01", 5000), rec("2026-11-02", 700), rec("2026-11-03", 30))
    # Five days later, still before the start: the bound is 7 days before the creation.
    clock.at = at(2026, 11, 15, 12)
    for start in ("2026-11-02", "2025-11-30"):
        resp = await client.patch(
            f"{API}/competitions/c", json={"start_date": start}, headers=auth("org")
        )
        body = assert_error(resp, 422, "validation_error")
        assert [d["field"] for d in body["details"]] == ["start_date"]
    resp = await client.get(f"{API}/competitions/c", headers=auth("org"))
    assert resp.json()["data"]["start_date"] == "2026-11-20"
    resp = await client.patch(
        f"{API}/competitions/c", json={"start_date": "2026-11-03"}, headers=auth("org")
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["data"]["start_date"] == "2026-11-03"
    resp = await client.get(f"{API}/leaderboard/c", headers=auth("org"))
    assert [(e["user_id"], e["score"]) for e in resp.json()["data"]["entries"]] == [("a", 30)]

    # The service role may move a window further back.
    resp = await client.patch(
        f"{API}/competitions/d",
        json={"start_date": "2026-10-01", "end_date": "2026-11-30"},
        headers=SERVICE_AUTH,
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["data"]["start_date"] == "2026-10-01"
    # After which the organizer can still rename it (the start is not theirs to judge).
    resp = await client.patch(
        f"{API}/competitions/d", json={"name": "Renamed"}, headers=auth("org")
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["data"]["name"] == "Renamed"
