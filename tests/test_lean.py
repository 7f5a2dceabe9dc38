"""The lean ASGI paths (healthcomp/lean.py) answer exactly as the framework routes do.

Every request here goes to two instances on one Redis: the app as built (with `Lean`) and
the same app with `Lean` taken out of its middleware, the framework alone. Status and
body agree for answers and refusals alike. The lean path answers only well-formed
requests (counted by wrapping its two ways of answering); anything else, and every
refusal of input (the framework's 422 envelope, 401 counted against the address, 413),
is the framework's own answer. A sync answered by the lean path has its marks cleared
by the time the call returns.

The last section covers the verified-token cache (core/auth.py `Authenticator.verify`):
a token is verified once, refused once expired although cached, and forgotten with the
key set it was verified against.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httpx
import jwt
import orjson
import pytest
from fastapi import FastAPI
from starlette.types import Scope, Send

from healthcomp import lean
from healthcomp.core.context import AppContext
from healthcomp.core.settings import Settings
from healthcomp.lean import Lean
from tests.conftest import SERVICE_AUTH, TEST_SECRET, assert_error, auth, make_settings
from tests.core.support import running_app
from tests.core.test_auth import (
    EC1,
    RS1,
    JWKSServer,
    bearer,
    hs256,
    jwks_settings,
    publish,
    user_claims,
)
from tests.domain.helpers import API, create_comp, join, rec, sync

BOARD = f"{API}/leaderboard"
SYNC = f"{API}/fitness/sync"
ME = f"{API}/users/me"


def without_lean(app: FastAPI) -> None:
    """The framework alone: the same app with the lean middleware taken out."""
    kept = [m for m in app.user_middleware if cast(object, m.cls) is not Lean]
    assert len(kept) == len(app.user_middleware) - 1
    app.user_middleware[:] = kept


@dataclass
class Pair:
    lean: httpx.AsyncClient
    framework: httpx.AsyncClient
    ctx: AppContext


@asynccontextmanager
async def pair(settings: Settings) -> AsyncIterator[Pair]:
    async with (
        running_app(settings) as (app, lean_client),
        running_app(settings, setup=without_lean, keep_keys=True) as (_, framework_client),
    ):
        yield Pair(lean_client, framework_client, app.state.ctx)


@dataclass
class Served:
    """How many answers the lean path gave itself (a page, a sync, or a refusal)."""

    count: int = 0


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> Served:
    record = Served()
    send_json, refuse = lean._send_json, lean._refuse

    async def counted_send_json(send: Send, body: bytes, status: int = 200) -> None:
        record.count += 1
        await send_json(send, body, status)

    async def counted_refuse(exc: Exception, scope: Scope, send: Send) -> None:
        record.count += 1
        await refuse(exc, scope, send)

    monkeypatch.setattr(lean, "_send_json", counted_send_json)
    monkeypatch.setattr(lean, "_refuse", counted_refuse)
    return record


def quiet_settings(tmp_path: Path, redis_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"rate_limit_user_per_minute": 0, "rate_limit_ip_per_minute": 0}
    values.update(overrides)
    return make_settings(tmp_path, redis_url, **values)


async def same(
    both: Pair, served: Served, method: str, url: str, *, lean_answers: bool | None, **kw: Any
) -> httpx.Response:
    """Sends the request to both instances; asserts they answer alike, and whether the
    lean path answered it itself (None: either may). Returns the lean instance's answer."""
    before = served.count
    mine = await both.lean.request(method, url, **kw)
    if lean_answers is not None:
        assert served.count == before + int(lean_answers), (method, url, mine.text)
    theirs = await both.framework.request(method, url, **kw)
    assert (mine.status_code, mine.json()) == (theirs.status_code, theirs.json()), (method, url)
    assert mine.headers["content-type"] == theirs.headers["content-type"]
    assert mine.headers.get("retry-after") == theirs.headers.get("retry-after")
    return mine


async def owed(ctx: AppContext, user: str) -> dict[str, str]:
    marks: dict[str, str] = await ctx.r.hgetall(ctx.keys.owed(user))
    return marks


async def _boards(client: httpx.AsyncClient) -> None:
    """Private "c" (u1, u2; u1 ahead), public "p" (u1); "out" is in neither."""
    await create_comp(client, "c")
    await create_comp(client, "p", visibility="public")
    await join(client, "c", "u1", "u2")
    await join(client, "p", "u1")
    await sync(client, "u1", rec("2026-11-03", 500))


@pytest.fixture
async def both(tmp_path: Path, redis_url: str) -> AsyncIterator[Pair]:
    async with pair(quiet_settings(tmp_path, redis_url)) as instances:
        await _boards(instances.lean)
        yield instances


# --- leaderboard -----------------------------------------------------------------------------

BOARD_ANSWERS: list[tuple[str | None, str, str, int]] = [
    # (viewer, competition, query, status); None is the service role
    ("u1", "c", "limit=10", 200),
    ("u1", "c", "limit=1&offset=1", 200),
    ("u1", "c", "around=me&limit=3", 200),
    ("u2", "c", "around=u1&limit=1", 200),
    ("u1", "c", "", 200),
    ("org", "c", "limit=10", 200),
    (None, "c", "limit=10", 200),
    ("out", "p", "limit=10", 200),
    ("out", "c", "limit=10", 404),
    ("u1", "nope", "limit=10", 404),
    ("u1", "c", "around=ghost", 404),
    ("out", "p", "around=me", 404),
    (None, "c", "around=me", 422),
]


def viewer_headers(viewer: str | None) -> dict[str, str]:
    return SERVICE_AUTH if viewer is None else auth(viewer)


async def test_board_answers_match_the_framework(both: Pair, served: Served) -> None:
    for viewer, cid, query, status in BOARD_ANSWERS:
        url = f"{BOARD}/{cid}?{query}" if query else f"{BOARD}/{cid}"
        resp = await same(
            both, served, "GET", url, lean_answers=True, headers=viewer_headers(viewer)
        )
        assert resp.status_code == status, (viewer, cid, query, resp.text)
        if status == 200:
            assert resp.json()["success"] is True
        else:
            assert_error(resp, status)


async def test_an_unknown_parameter_reaches_the_framework_route(both: Pair, served: Served) -> None:
    """`via=framework` is unknown to the lean path, and ignored by the route."""
    for viewer, cid, query, _ in BOARD_ANSWERS:
        headers = viewer_headers(viewer)
        before = served.count
        mine = await both.lean.get(f"{BOARD}/{cid}?{query}", headers=headers)
        theirs = await both.lean.get(f"{BOARD}/{cid}?{query}&via=framework", headers=headers)
        assert served.count == before + 1
        assert (mine.status_code, mine.json()) == (theirs.status_code, theirs.json())


BOARD_REFUSALS = [
    "limit=0",
    "limit=1001",
    "limit=abc",
    "limit=",
    "limit=1.5",
    "offset=-1",
    "offset=10000001",
    "around=bad%20id",
    "around=",
    "around=" + "x" * 65,
]


async def test_every_refused_query_is_the_framework_422(both: Pair, served: Served) -> None:
    for query in BOARD_REFUSALS:
        resp = await same(
            both, served, "GET", f"{BOARD}/c?{query}", lean_answers=False, headers=auth("u1")
        )
        body = assert_error(resp, 422, "validation_error")
        assert body["details"], query
    for cid in ("a%20b", "x" * 65):
        resp = await same(both, served, "GET", f"{BOARD}/{cid}", lean_answers=False, headers=auth())
        assert_error(resp, 422)


async def test_unusual_queries_go_to_the_framework(both: Pair, served: Served) -> None:
    """Queries the lean path does not read itself: a repeated name, an escaped value, a
    name in another case. Whatever the framework makes of them is the answer."""
    for query in ("limit=10&limit=20", "limit=%31%30", "Limit=10", "limit=10&", "limit=+10"):
        resp = await same(
            both, served, "GET", f"{BOARD}/c?{query}", lean_answers=False, headers=auth("u1")
        )
        assert resp.status_code in (200, 422), query


NO_USABLE_TOKEN: list[dict[str, str]] = [
    {},
    {"Authorization": "Bearer not.a.token"},
    {"Authorization": "Token x"},
    {"Authorization": "Bearer "},
    {"Authorization": "Bearer " + jwt.encode(user_claims("u1"), "another-secret-" * 4)},
]


async def test_board_without_a_usable_token(both: Pair, served: Served) -> None:
    for headers in NO_USABLE_TOKEN:
        resp = await same(
            both, served, "GET", f"{BOARD}/c?limit=10", lean_answers=False, headers=headers
        )
        assert_error(resp, 401, "unauthorized")


async def test_refused_tokens_count_against_the_address(
    tmp_path: Path, redis_url: str, served: Served
) -> None:
    """On both lean routes: three refusals from one address, then 429; a good token from
    the same address is not held back."""
    settings = quiet_settings(tmp_path, redis_url, rate_limit_ip_per_minute=3)
    bad = {"Authorization": "Bearer not.a.token"}
    async with running_app(settings) as (_, client):
        assert_error(await client.get(f"{BOARD}/c", headers=bad), 401)
        assert_error(await client.post(SYNC, json=ONE, headers=bad), 401)
        assert_error(await client.post(SYNC, json=ONE), 401)
        assert_error(await client.get(f"{BOARD}/c", headers=bad), 429, "rate_limited")
        assert_error(await client.post(SYNC, json=ONE, headers=bad), 429, "rate_limited")
        assert served.count == 0
        assert (await client.post(SYNC, json=ONE, headers=auth("u1"))).status_code == 200
        resp = await client.get(f"{BOARD}/c", headers=auth("u1"))
        assert_error(resp, 404, "competition_not_found")
        assert served.count == 2


async def test_scheme_and_header_forms(both: Pair, served: Served) -> None:
    token = auth("u1")["Authorization"].split(" ", 1)[1]
    url = f"{BOARD}/c?limit=10"
    for value in (f"bearer {token}", f"Bearer   {token}", f"BEARER {token} "):
        resp = await same(
            both, served, "GET", url, lean_answers=None, headers={"authorization": value}
        )
        assert resp.status_code == 200, value
    twice = [("authorization", f"Bearer {token}"), ("authorization", "Bearer x.y.z")]
    await same(both, served, "GET", url, lean_answers=False, headers=twice)


# --- sync ---------------------------------------------------------------------------------------


async def post_sync(
    both: Pair,
    served: Served,
    user: str | None,
    body: bytes | dict[str, Any],
    *,
    lean_answers: bool | None,
    content_type: str | None = "application/json",
) -> httpx.Response:
    headers = dict(viewer_headers(user))
    if content_type is not None:
        headers["content-type"] = content_type
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return await same(
        both, served, "POST", SYNC, lean_answers=lean_answers, content=raw, headers=headers
    )


ONE = {"date": "2026-11-04", "steps": 10}

SYNC_REFUSED_BY_THE_FRAMEWORK: list[tuple[str, bytes | dict[str, Any], str | None, int]] = [
    # (what, body, content type, status)
    ("invalid JSON", b'{"date": "2026-11-04", "steps": ', "application/json", 422),
    ("empty body", b"", "application/json", 422),
    ("negative value", {"date": "2026-11-04", "steps": -1}, "application/json", 422),
    ("over a cap", {"date": "2026-11-04", "steps": 100_001}, "application/json", 422),
    ("an unknown field", {"date": "2026-11-04", "steps": 1, "bonus": 1}, "application/json", 422),
    ("no records", {"records": []}, "application/json", 422),
    ("a bad id", {"records": [ONE], "competition_id": "a b"}, "application/json", 422),
    ("not JSON", b"date=2026-11-04", "application/x-www-form-urlencoded", 415),
]


async def test_sync_refusals_are_the_framework_answers(both: Pair, served: Served) -> None:
    for what, body, content_type, status in SYNC_REFUSED_BY_THE_FRAMEWORK:
        resp = await post_sync(
            both, served, "u2", body, lean_answers=False, content_type=content_type
        )
        assert_error(resp, status)
        assert resp.status_code == status, what
    assert await owed(both.ctx, "u2") == {}


async def test_loose_numbers_are_answered_as_the_framework_does(both: Pair, served: Served) -> None:
    """A string or a boolean for a number: the lean path validates with the route's own
    schema, so whatever the framework answers, it answers the same."""
    for value in ("10", True, 1.0, "1e1"):
        await post_sync(
            both, served, "out", {"date": "2026-11-04", "steps": value}, lean_answers=None
        )


async def test_sync_without_a_content_type_is_the_framework_answer(
    both: Pair, served: Served
) -> None:
    """Whatever the framework makes of a JSON body sent without a content type (or as
    text), the lean path hands it over and the answer is the same."""
    for content_type in (None, "text/plain", "application/merge-patch+json"):
        await post_sync(both, served, "out", ONE, lean_answers=False, content_type=content_type)


SYNC_REFUSED_BY_THE_SERVICE: list[tuple[str, str | None, dict[str, Any], int, str | None]] = [
    # (what, user, body, status, error)
    ("unknown competition", "u2", {**ONE, "competition_id": "nope"}, 404, "competition_not_found"),
    ("a private one not mine", "out", {**ONE, "competition_id": "c"}, 404, "competition_not_found"),
    ("a public one not mine", "u2", {**ONE, "competition_id": "p"}, 403, "not_participant"),
    ("in a batch", "u2", {"records": [ONE, {**ONE, "competition_id": "p"}]}, 403, None),
    ("a service token without a user", None, ONE, 422, "validation_error"),
    ("someone else's records", "u2", {**ONE, "user_id": "u1"}, 403, None),
    ("a day that has not begun", "u2", {"date": "2026-11-13", "steps": 1}, 422, None),
    ("before 2000", "u2", {"date": "1999-12-31", "steps": 1}, 422, None),
]


async def test_sync_refusals_by_the_service_are_answered_alike(both: Pair, served: Served) -> None:
    for what, user, body, status, error in SYNC_REFUSED_BY_THE_SERVICE:
        resp = await post_sync(both, served, user, body, lean_answers=True)
        assert resp.status_code == status, (what, resp.text)
        assert_error(resp, status, error)
    # Nothing of a refused sync was stored.
    for user in ("u2", "out"):
        assert await owed(both.ctx, user) == {}
        assert await both.ctx.r.hgetall(both.ctx.keys.records(user)) == {}, user


async def test_sync_without_a_usable_token(both: Pair, served: Served) -> None:
    for headers in NO_USABLE_TOKEN:
        resp = await same(both, served, "POST", SYNC, lean_answers=False, json=ONE, headers=headers)
        assert_error(resp, 401, "unauthorized")


async def test_a_body_over_the_limit_is_413(tmp_path: Path, redis_url: str, served: Served) -> None:
    settings = quiet_settings(tmp_path, redis_url, max_body_bytes=1024)
    async with pair(settings) as instances:
        records = [rec(f"2026-11-{day:02d}", 100, source="watch") for day in range(1, 10)]
        small = orjson.dumps({"records": records[:3]})
        large = orjson.dumps({"records": records * 3})
        assert len(small) < 1024 < len(large)
        headers = {**auth("u1"), "content-type": "application/json"}
        resp = await same(
            instances, served, "POST", SYNC, lean_answers=False, content=large, headers=headers
        )
        assert_error(resp, 413, "payload_too_large")

        async def chunks() -> AsyncIterator[bytes]:
            for i in range(0, len(large), 300):
                yield large[i : i + 300]

        for client in (instances.lean, instances.framework):
            resp = await client.post(SYNC, content=chunks(), headers=headers)
            assert_error(resp, 413, "payload_too_large")
        resp = await same(
            instances, served, "POST", SYNC, lean_answers=True, content=small, headers=headers
        )
        assert resp.status_code == 200, resp.text


async def test_a_sync_answered_by_the_lean_path(both: Pair, served: Served) -> None:
    before = served.count
    resp = await both.lean.post(SYNC, json=rec("2026-11-04", 800), headers=auth("u2"))
    assert served.count == before + 1
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/json"
    assert resp.json() == {
        "success": True,
        "data": {
            "records_accepted": 1,
            "competitions": [
                {"competition_id": "c", "score": 800, "rank": 1, "previous_rank": 2},
            ],
        },
        "message": "Activity synced.",
    }
    # Step 3 ran before the call returned: no mark is left.
    assert await owed(both.ctx, "u2") == {}

    # The same sync again changes nothing: both paths say so in the same words.
    again = {"records": [rec("2026-11-04", 800)]}
    resp = await post_sync(both, served, "u2", again, lean_answers=True)
    assert resp.json()["data"]["competitions"][0] == {
        "competition_id": "c",
        "score": 800,
        "rank": 1,
        "previous_rank": 1,
    }
    # A batch into two competitions, and the seed's single record with a datetime.
    batch = {"records": [rec("2026-11-05", 50), rec("2026-11-05", 70, source="watch")]}
    resp = await both.lean.post(SYNC, json=batch, headers=auth("u1"))
    assert resp.status_code == 200, resp.text
    data = resp.json()["data"]
    assert data["records_accepted"] == 2
    assert [c["competition_id"] for c in data["competitions"]] == ["c", "p"]
    assert [c["score"] for c in data["competitions"]] == [570, 570]
    seed = {"user_id": "u1", "competition_id": "p", "date": "2026-11-06T23:30:00-08:00"}
    resp = await both.lean.post(SYNC, json={**seed, "steps": 5}, headers=auth("u1"))
    assert resp.status_code == 200, resp.text
    assert resp.json()["data"]["competitions"][1]["score"] == 575
    assert await owed(both.ctx, "u1") == {}
    # The service may sync for a user.
    resp = await post_sync(both, served, None, {**ONE, "user_id": "u2"}, lean_answers=True)
    assert resp.status_code == 200


# --- the verified-token cache ----------------------------------------------------------------


@dataclass
class Decodes:
    count: int = 0


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> Decodes:
    """Counts signature checks (PyJWT's decode, the real one still runs)."""
    record = Decodes()
    real = jwt.decode

    def counting(*args: Any, **kwargs: Any) -> Any:
        record.count += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(jwt, "decode", counting)
    return record


async def test_a_token_is_verified_once(tmp_path: Path, redis_url: str, decodes: Decodes) -> None:
    async with running_app(quiet_settings(tmp_path, redis_url)) as (_, client):
        headers = auth("u1")
        assert (await client.get(ME, headers=headers)).status_code == 200
        assert decodes.count == 1
        for _ in range(3):
            assert (await client.get(ME, headers=headers)).status_code == 200
            assert (await client.get(f"{BOARD}/x?limit=5", headers=headers)).status_code == 404
            assert (await client.post(SYNC, json=ONE, headers=headers)).status_code == 200
        assert decodes.count == 1
        # Another token is verified on its own.
        assert (await client.get(ME, headers=auth("u2"))).status_code == 200
        assert decodes.count == 2
        # A refused token is not kept: verified (and refused) each time.
        other = {"Authorization": "Bearer " + jwt.encode(user_claims("u1"), "another-" * 8)}
        for expected in (3, 4):
            assert_error(await client.get(ME, headers=other), 401)
            assert decodes.count == expected


async def test_a_cached_token_is_refused_once_expired(
    tmp_path: Path, redis_url: str, decodes: Decodes
) -> None:
    settings = quiet_settings(tmp_path, redis_url, jwt_leeway_seconds=0)
    async with running_app(settings) as (_, client):
        exp = math.ceil(time.time()) + 1
        headers = bearer(hs256(user_claims("u1", exp=exp), TEST_SECRET))
        assert (await client.get(ME, headers=headers)).status_code == 200
        assert (await client.get(f"{BOARD}/x", headers=headers)).status_code == 404
        assert decodes.count == 1
        await asyncio.sleep(max(0.0, exp - time.time()) + 0.05)
        for url in (ME, f"{BOARD}/x"):
            body = assert_error(await client.get(url, headers=headers), 401, "unauthorized")
            assert "expired" in body["message"]
        resp = await client.post(SYNC, json=ONE, headers=headers)
        assert_error(resp, 401, "unauthorized")


@pytest.fixture
def key_server() -> Iterator[JWKSServer]:
    server = JWKSServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_a_cached_token_goes_with_the_key_set(
    tmp_path: Path, redis_url: str, key_server: JWKSServer
) -> None:
    publish(key_server, EC1)
    settings = jwks_settings(
        tmp_path, redis_url, key_server, jwks_cache_seconds=0.5, jwks_min_refetch_seconds=60
    )
    async with running_app(settings) as (_, client):
        good = bearer(EC1.sign(user_claims("u1")))
        assert (await client.get(ME, headers=good)).status_code == 200
        assert key_server.total() == 1
        # The key is withdrawn: within the key set's life the cached answer stands.
        publish(key_server, RS1)
        assert (await client.get(ME, headers=good)).status_code == 200
        await asyncio.sleep(0.6)
        # The key set expired, and the token with it: verified again, against the new set.
        assert_error(await client.get(ME, headers=good), 401, "unauthorized")
        assert_error(await client.get(f"{BOARD}/x", headers=good), 401, "unauthorized")
        assert key_server.total() == 2


async def test_a_token_first_seen_late_in_the_key_sets_life_goes_with_it(
    tmp_path: Path, redis_url: str, key_server: JWKSServer
) -> None:
    """The cache entry ends with the key set it was checked against, not a key-set
    lifetime after the token was first seen."""
    publish(key_server, EC1)
    settings = jwks_settings(
        tmp_path, redis_url, key_server, jwks_cache_seconds=1.0, jwks_min_refetch_seconds=60
    )
    async with running_app(settings) as (_, client):
        first = bearer(EC1.sign(user_claims("u1")))
        assert (await client.get(ME, headers=first)).status_code == 200  # key set fetched
        await asyncio.sleep(0.6)
        late = bearer(EC1.sign(user_claims("u2")))
        assert (await client.get(ME, headers=late)).status_code == 200  # cached now
        publish(key_server, RS1)  # EC1 withdrawn
        await asyncio.sleep(0.6)  # the key set, fetched 1.2 s ago, has expired
        never_seen = bearer(EC1.sign(user_claims("u3")))
        assert_error(await client.get(ME, headers=never_seen), 401)  # refetched: EC1 gone
        # The same key through the token cached 0.6 s ago: refused as well.
        assert_error(await client.get(ME, headers=late), 401)
        assert_error(await client.get(f"{BOARD}/x", headers=late), 401)
