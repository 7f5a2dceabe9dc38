"""Hostile input, ids and bodies (issue 12, SPEC §4): what an attacker types where an id,
a body or a number goes.

* Ids (`^[A-Za-z0-9_-]{1,64}$`): every path parameter of every operation in the OpenAPI
  schema, the ids in query strings and bodies, and the WebSocket's path, each given
  characters that mean something in a Redis key (`:`, `{`, `}`, `*`, `|`), spaces,
  control characters, unicode, dot segments, encoded slashes and 65+ characters: 422
  naming the field (404 when an encoded slash makes it another, unknown path). A
  well-formed id that does not exist is 404. Nothing in Redis changes: every key of the
  test's prefix is byte-for-byte the same afterwards, and no key anywhere carries the
  marker the hostile ids carry.
* Bodies: over 1 MiB on every route that takes one (413, declared or streamed); a batch
  far past its bound that still fits in 1 MiB; JSON nested 100,000 deep, and nested a
  few hundred deep inside a field (4xx, quickly, never a 500).
* Numbers anywhere but the number fields (tests/core/test_strict_input.py has those):
  NaN, infinities and huge values in query parameters, in string fields, in the payout
  preview's decimal `prize_pool`, and integers too long for Python to parse.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import unquote

import httpx
import orjson
import pytest
from fastapi import FastAPI

from healthcomp.core.context import AppContext
from tests.conftest import SERVICE_AUTH, assert_error, auth, make_settings
from tests.core.support import running_app
from tests.domain.helpers import API, comp_body
from tests.test_auth_matrix import OPERATIONS, Operation
from tests.test_hostile_tokens import ws_handshake
from tests.test_idor import snapshot

VICTIM = "victim"  # a competition every hostile id would like to reach
ORG = "victim-org"
MEMBER = "victim-member"
DAY = "2026-11-05"
MARK = "zq7"  # in every hostile id that can carry it: no key may ever contain it

# As sent on the wire (percent-encoded where a URL needs it).
HOSTILE_IDS: dict[str, str] = {
    "colon": f"{MARK}:meta",
    "hash tag": f"{MARK}%7Bc:{VICTIM}%7D",
    "closing brace": f"{MARK}%7D:lb",
    "star": f"{MARK}*",
    "pipe": f"{MARK}%7Cx",
    "question mark": f"{MARK}%3F",
    "space": f"{MARK}%20x",
    "tab": f"{MARK}%09",
    "trailing newline": f"{VICTIM}%0A",
    "NUL": f"{MARK}%00",
    "unicode letter": f"{MARK}%C3%BC",
    "emoji": f"{MARK}%F0%9F%8F%83",
    "right-to-left override": f"{MARK}%E2%80%AE",
    "full-width letters (NFKC: victim)": "%EF%BD%96%EF%BD%89%EF%BD%83%EF%BD%94%EF%BD%89%EF%BD%8D",
    "dot": f"{MARK}.x",
    "dot-dot, encoded": "%2e%2e",
    "overlong UTF-8 dots": "%C0%AE%C0%AE",
    "invalid UTF-8": f"{MARK}%FF",
    "percent": f"{MARK}%25",
    "quote": f"{MARK}%22",
    "backslash": f"{MARK}%5Cx",
    "65 characters": MARK + "x" * 62,
    "1,000 characters": MARK + "x" * 997,
}
# An encoded slash is decoded before routing: it makes another path, which is unknown.
SLASHED_IDS: dict[str, str] = {
    "encoded slash": f"{MARK}%2Fx",
    "encoded slash and dot-dot": f"{MARK}%2F..%2F{VICTIM}",
}
# Flag ids are digits (`^[0-9]{1,18}$`): these are well-formed ids elsewhere.
HOSTILE_FLAG_IDS: dict[str, str] = {
    "letters": MARK,
    "negative": "-1",
    "19 digits": "1" * 19,
    "exponent": "1e3",
    "arabic-indic digit": "%D9%A1",
}


def _decoded(raw: str) -> str:
    return unquote(raw, errors="replace")


@pytest.fixture(scope="module")
async def hostile_app(
    redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """One app for the module: every test here checks that it changed nothing."""
    settings = make_settings(
        tmp_path_factory.mktemp("hostile"),
        redis_url,
        rate_limit_ip_per_minute=1_000_000,
        rate_limit_user_per_minute=1_000_000,
        rate_limit_user_burst=1_000_000,
    )
    async with running_app(settings) as (app, client):
        body = comp_body(VICTIM, start_date="2026-11-03")
        resp = await client.post(f"{API}/competitions", json=body, headers=auth(ORG))
        assert resp.status_code == 201, resp.text
        resp = await client.post(f"{API}/competitions/{VICTIM}/join", headers=auth(MEMBER))
        assert resp.status_code == 200, resp.text
        record = {"date": DAY, "steps": 4000, "source": "phone"}
        resp = await client.post(f"{API}/fitness/sync", json=record, headers=auth(MEMBER))
        assert resp.status_code == 200, resp.text
        yield app, client


async def _marked_keys(ctx: AppContext) -> list[str]:
    """Every key on the server (not only this test's prefix) that carries the marker."""
    return [k async for k in ctx.r.scan_iter(match=f"*{MARK}*", count=1000)]


async def _unchanged(ctx: AppContext, before: dict[str, bytes | None]) -> None:
    after = await snapshot(ctx)
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    assert changed == [], f"hostile requests changed {changed}"
    assert await _marked_keys(ctx) == []


# --- ids in paths ------------------------------------------------------------------------------

WITH_PATH_IDS = [op for op in OPERATIONS if "{" in op.template]
VALID = {"competition_id": VICTIM, "user_id": MEMBER, "flag_id": "1"}


def _params(op: Operation) -> list[str]:
    return re.findall(r"\{(\w+)\}", op.template)


def _path(op: Operation, param: str, value: str) -> str:
    path = op.template
    for name in _params(op):
        path = path.replace("{" + name + "}", value if name == param else VALID[name])
    return path


def test_the_schema_has_the_path_ids_this_file_knows() -> None:
    assert len(WITH_PATH_IDS) >= 15
    unknown = {p for op in WITH_PATH_IDS for p in _params(op)} - set(VALID)
    assert unknown == set(), f"a new kind of path id: give it a valid value in VALID: {unknown}"


@pytest.mark.parametrize("op", WITH_PATH_IDS, ids=[op.id for op in WITH_PATH_IDS])
async def test_hostile_path_ids_are_422_and_touch_nothing(
    hostile_app: tuple[FastAPI, httpx.AsyncClient], op: Operation
) -> None:
    app, client = hostile_app
    ctx: AppContext = app.state.ctx
    before = await snapshot(ctx)
    # The organizer and the service role can see the victim: nothing but the id is wrong.
    callers = {"service": SERVICE_AUTH, "organizer": auth(ORG)}
    body = {} if op.has_body else None
    wrong: list[str] = []
    for param in _params(op):
        hostile = HOSTILE_FLAG_IDS if param == "flag_id" else HOSTILE_IDS
        for name, raw in {**hostile, **SLASHED_IDS}.items():
            for who, headers in callers.items():
                resp = await client.request(
                    op.method, _path(op, param, raw), headers=headers, json=body
                )
                payload = resp.json()
                if name in SLASHED_IDS:
                    want: tuple[Any, ...] = (404, "not_found")
                    got: tuple[Any, ...] = (resp.status_code, payload.get("error"))
                else:
                    fields = [d.get("field") for d in payload.get("details") or []]
                    want = (422, "validation_error", True)
                    got = (resp.status_code, payload.get("error"), param in fields)
                if got != want:
                    wrong.append(f"{param}={name!r} as {who}: {resp.status_code} {resp.text[:160]}")
    assert wrong == [], "\n".join(wrong)
    await _unchanged(ctx, before)


@pytest.mark.parametrize(
    "op",
    [op for op in WITH_PATH_IDS if "{competition_id}" in op.template],
    ids=[op.id for op in WITH_PATH_IDS if "{competition_id}" in op.template],
)
async def test_a_well_formed_unknown_competition_id_is_404(
    hostile_app: tuple[FastAPI, httpx.AsyncClient], op: Operation
) -> None:
    """Ids are compared exactly: another case, a near miss, the longest id."""
    app, client = hostile_app
    before = await snapshot(app.state.ctx)
    for cid in ("VICTIM", "victim-", "victim_", "v" * 64):
        resp = await client.request(
            op.method,
            _path(op, "competition_id", cid),
            headers=SERVICE_AUTH,
            json={} if op.has_body else None,
        )
        assert_error(resp, 404, "competition_not_found")
    await _unchanged(app.state.ctx, before)


async def _raw(
    app: FastAPI, method: str, raw_path: bytes, headers: dict[str, str]
) -> tuple[int, dict[str, Any]]:
    """One request with its path exactly as given (an HTTP client would remove the dot
    segments first), decoded as the server does: the path is percent-decoded, not
    normalized."""
    path = unquote(raw_path.decode("ascii"), errors="replace")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": raw_path,
        "root_path": "",
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("test", 80),
    }
    sent: list[dict[str, Any]] = []
    received = False

    async def receive() -> dict[str, Any]:
        nonlocal received
        if received:
            await asyncio.sleep(3600)
        received = True
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, orjson.loads(body)


@pytest.mark.parametrize(
    ("method", "raw_path", "answer"),
    [
        ("GET", b"/api/v1/competitions/..", (422, "validation_error")),
        ("GET", b"/api/v1/competitions/.", (422, "validation_error")),
        ("GET", b"/api/v1/leaderboard/..", (422, "validation_error")),
        ("GET", b"/api/v1/fitness/stats/..", (422, "validation_error")),
        ("GET", b"/api/v1/competitions/../users/me", (404, "not_found")),
        ("GET", b"/api/v1/leaderboard/../competitions/victim/participants", (404, "not_found")),
        ("POST", b"/api/v1/competitions/victim/../victim/cancel", (404, "not_found")),
        ("GET", b"/api/v1/users/../users/victim-member/competitions", (404, "not_found")),
    ],
)
async def test_dot_segments_are_not_resolved(
    hostile_app: tuple[FastAPI, httpx.AsyncClient],
    method: str,
    raw_path: bytes,
    answer: tuple[int, str],
) -> None:
    """`..` reaches the app as an id (422) or as a path no route has (404); it never
    walks to another route (a proxy in front may normalize; the service does not)."""
    app, _ = hostile_app
    before = await snapshot(app.state.ctx)
    for headers in (SERVICE_AUTH, auth(ORG)):
        status, body = await _raw(app, method, raw_path, headers)
        assert (status, body["error"]) == answer, body
    await _unchanged(app.state.ctx, before)


# --- ids in queries, bodies and the WebSocket's path ---------------------------------------------


def _id_sites(hostile: str) -> list[tuple[str, str, str, dict[str, Any], Any, dict[str, str]]]:
    """(where, method, path, query, body, headers): an id in a query or a body."""
    member, service, org = auth(MEMBER), SERVICE_AUTH, auth(ORG)
    record = {"date": DAY, "steps": 1, "source": "phone"}
    scores = {"steps": 1, "distance": 0, "calories": 0}
    return [
        ("stats ?competition_id", "GET", f"/fitness/stats/{MEMBER}", {"competition_id": hostile}, None, member),
        ("history ?competition_id", "GET", f"/fitness/history/{MEMBER}", {"competition_id": hostile}, None, member),
        ("leaderboard ?around", "GET", f"/leaderboard/{VICTIM}", {"around": hostile}, None, member),
        ("sync user_id", "POST", "/fitness/sync", {}, {**record, "user_id": hostile}, service),
        ("sync competition_id", "POST", "/fitness/sync", {}, {**record, "competition_id": hostile}, member),
        ("batch user_id", "POST", "/fitness/sync", {}, {"records": [{**record, "user_id": hostile}]}, service),
        ("batch competition_id", "POST", "/fitness/sync", {}, {"records": [{**record, "competition_id": hostile}]}, member),
        ("create id", "POST", "/competitions", {}, comp_body(hostile, start_date="2026-11-10"), org),
        ("trusted write user_id", "POST", "/leaderboard/update", {}, {"user_id": hostile, "competition_id": VICTIM, **scores}, service),
        ("trusted write competition_id", "POST", "/leaderboard/update", {}, {"user_id": MEMBER, "competition_id": hostile, **scores}, service),
        ("join user_id", "POST", f"/competitions/{VICTIM}/join", {}, {"user_id": hostile}, service),
        ("leave user_id", "POST", f"/competitions/{VICTIM}/leave", {}, {"user_id": hostile}, service),
    ]  # fmt: skip


async def test_hostile_ids_in_queries_and_bodies_are_422(
    hostile_app: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = hostile_app
    before = await snapshot(app.state.ctx)
    wrong: list[str] = []
    for name, raw in {**HOSTILE_IDS, **SLASHED_IDS}.items():
        for where, method, path, query, body, headers in _id_sites(_decoded(raw)):
            resp = await client.request(
                method, API + path, params=query, json=body, headers=headers
            )
            if resp.status_code != 422 or resp.json()["error"] != "validation_error":
                wrong.append(f"{where}={name!r}: {resp.status_code} {resp.text[:160]}")
    assert wrong == [], "\n".join(wrong)
    await _unchanged(app.state.ctx, before)


async def test_hostile_ids_on_the_websocket_close_with_1008(
    hostile_app: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, _ = hostile_app
    ctx: AppContext = app.state.ctx
    before = await snapshot(ctx)
    jwt_token = auth(MEMBER)["Authorization"][7:]
    for name, raw in {**HOSTILE_IDS, **SLASHED_IDS}.items():
        path = "/ws/leaderboard/" + _decoded(raw)
        shake = await ws_handshake(ctx, path, query=f"token={jwt_token}")
        assert shake.close_code == 1008, (name, shake)
        assert [(f["type"], f["error"]) for f in shake.frames] == [("error", "validation_error")], (
            name,
            shake.frames,
        )
    # The control: the same member on the victim's board is let in.
    shake = await ws_handshake(ctx, f"/ws/leaderboard/{VICTIM}", query=f"token={jwt_token}")
    assert [f["type"] for f in shake.frames] == ["connected", "leaderboard_update"], shake
    await _unchanged(ctx, before)


# --- bodies --------------------------------------------------------------------------------------

WITH_BODIES = [op for op in OPERATIONS if op.has_body]
MIB = 1024 * 1024


def _fill(op: Operation) -> str:
    path = op.template
    for name in _params(op):
        path = path.replace("{" + name + "}", VALID[name])
    return path


async def _stream(data: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


@pytest.mark.parametrize("op", WITH_BODIES, ids=[op.id for op in WITH_BODIES])
async def test_a_body_over_1_mib_is_413_on_every_route(
    hostile_app: tuple[FastAPI, httpx.AsyncClient], op: Operation
) -> None:
    """The default limit (SPEC §4: 1 MiB), on every route that takes a body, the lean
    sync path among them; declared by Content-Length or streamed without one."""
    app, client = hostile_app
    before = await snapshot(app.state.ctx)
    # Valid JSON all the way: a long string in an object.
    big = b'{"x": "' + b"a" * MIB + b'"}'
    headers = {**SERVICE_AUTH, "content-type": "application/json"}
    for content in (big, _stream(big)):
        started = time.monotonic()
        resp = await client.request(op.method, _fill(op), content=content, headers=headers)
        assert_error(resp, 413, "payload_too_large")
        assert time.monotonic() - started < 2.0
    await _unchanged(app.state.ctx, before)


async def test_a_batch_far_past_its_bound_within_1_mib_is_422_quickly(
    hostile_app: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    """150,000 records (the bound is 400) in under 1 MiB: refused without validating
    each, and the answer does not list them."""
    app, client = hostile_app
    before = await snapshot(app.state.ctx)
    headers = {**auth(MEMBER), "content-type": "application/json"}
    for record in (b"{}", b"1"):
        body = b'{"records":[' + b",".join([record] * 150_000) + b"]}"
        assert len(body) < MIB
        started = time.monotonic()
        resp = await client.post(f"{API}/fitness/sync", content=body, headers=headers)
        elapsed = time.monotonic() - started
        payload = assert_error(resp, 422, "validation_error")
        assert [d["field"] for d in payload["details"]] == ["records"], payload
        assert len(resp.content) < 1000 and elapsed < 2.0, (len(resp.content), elapsed)
    await _unchanged(app.state.ctx, before)


DEEP = 100_000


@pytest.mark.parametrize("op", WITH_BODIES, ids=[op.id for op in WITH_BODIES])
async def test_deeply_nested_json_is_a_quick_4xx_on_every_route(
    hostile_app: tuple[FastAPI, httpx.AsyncClient], op: Operation
) -> None:
    app, client = hostile_app
    before = await snapshot(app.state.ctx)
    headers = {**SERVICE_AUTH, "content-type": "application/json"}
    for body in (
        b"[" * DEEP,  # never closed
        b"[" * DEEP + b"]" * DEEP,  # well formed
        b'{"a":' * DEEP + b"1" + b"}" * DEEP,
        b'{"name": ' + b"[" * DEEP + b"]" * DEEP + b"}",
    ):
        started = time.monotonic()
        resp = await client.request(op.method, _fill(op), content=body, headers=headers)
        assert resp.status_code in (400, 422), resp.text
        assert resp.json()["success"] is False
        assert time.monotonic() - started < 1.0
    await _unchanged(app.state.ctx, before)


@pytest.mark.parametrize("depth", [300, 600, 900])
@pytest.mark.parametrize(
    ("method", "path", "field", "rest"),
    [
        ("PUT", "/users/me/profile", "display_name", {}),
        ("POST", "/fitness/sync", "source", {"date": DAY, "steps": 1}),
        ("POST", f"/competitions/{VICTIM}/flags/1", "reason", {"action": "dismiss"}),
        ("POST", "/competitions", "name", {"metric": "steps"}),
    ],
    ids=["profile", "sync (lean path)", "flag review", "create"],
)
async def test_a_field_nested_hundreds_deep_is_422_naming_it(
    hostile_app: tuple[FastAPI, httpx.AsyncClient],
    method: str,
    path: str,
    field: str,
    rest: dict[str, Any],
    depth: int,
) -> None:
    """JSON that parses (Python's parser stops near 1,000 levels; orjson's, which the
    lean sync path tries first, at 1,024) but nests a string field a few hundred deep:
    the validation answer echoed the input back and failed on it (a 500)."""
    app, client = hostile_app
    before = await snapshot(app.state.ctx)
    body = (
        b"{"
        + b",".join(
            [orjson.dumps(field) + b":" + b"[" * depth + b"]" * depth]
            + [orjson.dumps(k) + b":" + orjson.dumps(v) for k, v in rest.items()]
        )
        + b"}"
    )
    headers = {**auth(ORG), "content-type": "application/json"}
    resp = await client.request(method, API + path, content=body, headers=headers)
    payload = assert_error(resp, 422, "validation_error")
    assert field in [d["field"] for d in payload["details"]], payload
    assert len(resp.content) < 4000
    await _unchanged(app.state.ctx, before)


# --- numbers where they do not belong ------------------------------------------------------------

ODD_NUMBERS = ["NaN", "nan", "Infinity", "-Infinity", "inf", "1e400", "-0", "1e3", "0x10", "9" * 30]


async def test_odd_numbers_in_query_parameters_are_422(
    hostile_app: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = hostile_app
    member = auth(MEMBER)
    wrong: list[str] = []
    for value in ODD_NUMBERS:
        for path, name in (
            (f"/leaderboard/{VICTIM}", "limit"),  # the lean path
            (f"/leaderboard/{VICTIM}", "offset"),
            (f"/competitions/{VICTIM}/participants", "limit"),
            ("/competitions", "offset"),
            (f"/fitness/stats/{MEMBER}", "step_goal"),
            (f"/fitness/analytics/{VICTIM}", "limit"),
            (f"/competitions/{VICTIM}/flags", "limit"),
        ):
            if value == "-0" and name == "offset":
                continue  # "-0" is a fine offset: zero
            resp = await client.get(
                API + path,
                params={name: value},
                headers=member if "flags" not in path else auth(ORG),
            )
            fields = [d.get("field") for d in resp.json().get("details") or []]
            if resp.status_code != 422 or name not in fields:
                wrong.append(f"{path}?{name}={value}: {resp.status_code} {resp.text[:120]}")
    assert wrong == [], "\n".join(wrong)
    # The WebSocket's own parameters.
    jwt_token = member["Authorization"][7:]
    for name in ("limit", "since"):
        for value in ODD_NUMBERS:
            if value == "-0":
                continue
            shake = await ws_handshake(
                app.state.ctx,
                f"/ws/leaderboard/{VICTIM}",
                query=f"token={jwt_token}&{name}={value}",
            )
            assert shake.close_code == 1008 and shake.frames[0]["error"] == "validation_error", (
                name,
                value,
                shake,
            )


@pytest.mark.parametrize(
    "raw",
    [
        b'{"display_name": NaN}',
        b'{"display_name": -Infinity}',
        b'{"display_name": 1e999}',
        b'{"display_name": "Ada", "avatar_url": Infinity}',
        b'{"display_name": ' + b"9" * 5000 + b"}",  # past Python's 4,300 digits
        b'{"display_name": "Ada", "avatar_url": -' + b"1" * 5000 + b"}",
    ],
    ids=["NaN", "-Infinity", "1e999", "Infinity in a URL", "5000 digits", "-5000 digits"],
)
async def test_odd_numbers_in_string_fields_are_4xx(
    hostile_app: tuple[FastAPI, httpx.AsyncClient], raw: bytes
) -> None:
    _, client = hostile_app
    headers = {**auth(MEMBER), "content-type": "application/json"}
    resp = await client.put(f"{API}/users/me/profile", content=raw, headers=headers)
    assert resp.status_code in (400, 422), resp.text
    me = await client.get(f"{API}/users/me", headers=auth(MEMBER))
    assert me.json()["data"]["display_name"] == MEMBER  # unchanged


@pytest.mark.parametrize(
    "amount",
    [
        "NaN",
        "sNaN",
        "Infinity",
        "-Infinity",
        "1e999999999",  # was a 500 (decimal.Overflow)
        "1E+999999999999999999",
        "1e-999999999",  # was taken as 0 (underflow)
        "0.001",
        "-1",
        "1.00000000000000000000000000000001",  # was rounded to 1.00 silently
        "9" * 30,
    ],
)
async def test_odd_prize_pool_amounts_are_422(
    hostile_app: tuple[FastAPI, httpx.AsyncClient], amount: str
) -> None:
    """The payout preview's `prize_pool` is the one decimal a client sends as a string:
    anything that is not a non-negative amount with at most the currency's decimals,
    within 10^15 minor units, is 422 naming it, never a 500, never rounded."""
    _, client = hostile_app
    url = f"{API}/prizes/calculate/{VICTIM}"
    resp = await client.post(url, json={"prize_pool": amount}, headers=auth(ORG))
    payload = assert_error(resp, 422, "validation_error")
    assert [d["field"] for d in payload["details"]] == ["prize_pool"], payload
    # The control: a real amount is previewed.
    resp = await client.post(url, json={"prize_pool": "250.00"}, headers=auth(ORG))
    assert resp.status_code == 200, resp.text
    assert resp.json()["data"]["pool_cents"] == 25000
