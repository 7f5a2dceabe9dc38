"""Hostile input, IDOR (issue 12, SPEC §3 and §5): every operation called on someone
else's competition or account, by each kind of caller, gets the answer the SPEC gives.

The callers: a signed-in user outside the competition, a participant acting on another
participant, the organizer, the service role, and (where a user is named) that user
themself. Each competition is made private and public in turn. The table below names
the answer of every cell; the operations come from the app's OpenAPI schema at
collection time (as in tests/test_auth_matrix.py), so a route added without a row here
fails `test_every_operation_has_a_row`. The WebSocket has its row too.

What each cell also proves:

* a refusal changes nothing: every key of the test's prefix is byte-for-byte the same
  afterwards (`DUMP`), the rate limiter's aside;
* "unknown and not-visible answer the same 404": a private competition's 404 to an
  outsider is, word for word once the ids are swapped, the 404 of an id that does not
  exist.

tests/domain/test_access.py holds the finer rules (what a participant sees of another,
listing, backdating); this is the wide net over every route.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from healthcomp.core.context import AppContext
from tests.conftest import SERVICE_AUTH, auth, make_settings
from tests.core.support import running_app
from tests.domain.helpers import API, comp_body
from tests.test_auth_matrix import OPERATIONS
from tests.test_hostile_tokens import Handshake, ws_handshake

OUTSIDER, PARTICIPANT, ORGANIZER, SERVICE, SELF = (
    "outsider",
    "participant",
    "organizer",
    "service",
    "self",
)
PRIVATE, PUBLIC = "private", "public"
WS = ("WS", "/ws/leaderboard/{competition_id}")
PUBLIC_ROUTES = {("GET", "/health"), ("GET", "/health/ready"), ("GET", "/metrics")}
DAY = "2026-11-05"

_serial = itertools.count()


@dataclass(frozen=True)
class World:
    """One competition (organizer, two participants) and a user outside it. `target` is
    the participant whose data the others reach for."""

    cid: str
    organizer: str
    participant: str
    target: str
    outsider: str
    visibility: str

    @property
    def newcomer(self) -> str:
        """A user in nothing yet, for one caller to sign up in another's name."""
        return f"new{self.cid}"

    def user(self, caller: str) -> str | None:
        return {
            OUTSIDER: self.outsider,
            PARTICIPANT: self.participant,
            ORGANIZER: self.organizer,
            SELF: self.target,
            SERVICE: None,
        }[caller]

    def headers(self, caller: str) -> dict[str, str]:
        user = self.user(caller)
        return SERVICE_AUTH if user is None else auth(user)


async def make_world(client: httpx.AsyncClient, visibility: str) -> World:
    n = next(_serial)
    w = World(f"c{n}", f"org{n}", f"pa{n}", f"pb{n}", f"eve{n}", visibility)
    body = comp_body(w.cid, visibility=visibility, start_date="2026-11-03")
    resp = await client.post(f"{API}/competitions", json=body, headers=auth(w.organizer))
    assert resp.status_code == 201, resp.text
    for user in (w.participant, w.target):
        resp = await client.post(f"{API}/competitions/{w.cid}/join", headers=auth(user))
        assert resp.status_code == 200, resp.text
    # The target has a day of activity: their stats and history exist.
    record = {"date": DAY, "steps": 1000, "source": "phone"}
    resp = await client.post(f"{API}/fitness/sync", json=record, headers=auth(w.target))
    assert resp.status_code == 200, resp.text
    return w


@dataclass(frozen=True)
class Request:
    path: str
    params: dict[str, str] = field(default_factory=dict)
    body: Any = None


# An answer: (status, stable error code or None for a success). A cell may depend on the
# competition's visibility: {PRIVATE: answer, PUBLIC: answer}.
Answer = tuple[int, str | None]
Cell = Answer | dict[str, Answer]

NOT_FOUND: Answer = (404, "competition_not_found")
FORBIDDEN: Answer = (403, "forbidden")
NOT_ORGANIZER: Answer = (403, "not_organizer")
NOT_PARTICIPANT: Answer = (403, "not_participant")
OK: Answer = (200, None)
CREATED: Answer = (201, None)


def hidden(public: Answer) -> dict[str, Answer]:
    """A private competition hides from outsiders (the unknown-id 404); a public one
    answers `public`."""
    return {PRIVATE: NOT_FOUND, PUBLIC: public}


def organizers(ok: Answer) -> dict[str, Cell]:
    """The organizer and the service role manage; a participant may not; an outsider
    learns nothing of a private one."""
    return {
        OUTSIDER: hidden(NOT_ORGANIZER),
        PARTICIPANT: NOT_ORGANIZER,
        ORGANIZER: ok,
        SERVICE: ok,
    }


def members(ok: Answer, participant: Answer | None = None) -> dict[str, Cell]:
    """Participants, the organizer and the service role; outsiders: hidden or 403."""
    return {
        OUTSIDER: hidden(NOT_PARTICIPANT),
        PARTICIPANT: participant or ok,
        ORGANIZER: ok,
        SERVICE: ok,
    }


def own_account(ok: Answer = OK) -> dict[str, Cell]:
    """A user's own account: themself and the service role; nobody else."""
    return {
        OUTSIDER: FORBIDDEN,
        PARTICIPANT: FORBIDDEN,
        ORGANIZER: FORBIDDEN,
        SELF: ok,
        SERVICE: ok,
    }


@dataclass(frozen=True)
class Case:
    name: str
    request: Callable[[World, str], Request]
    answers: dict[str, Cell]


def _target_record(w: World, caller: str, **extra: Any) -> dict[str, Any]:
    return {"date": DAY, "steps": 2000, "source": "idor", **extra}


TABLE: dict[tuple[str, str], list[Case]] = {
    ("GET", "/api/v1/users/me"): [
        Case(
            "own profile",
            lambda w, c: Request("/users/me"),
            {OUTSIDER: OK, PARTICIPANT: OK, ORGANIZER: OK, SERVICE: FORBIDDEN},
        )
    ],
    ("PUT", "/api/v1/users/me/profile"): [
        Case(
            "own profile",
            lambda w, c: Request("/users/me/profile", body={"display_name": "Renamed"}),
            {OUTSIDER: OK, PARTICIPANT: OK, ORGANIZER: OK, SERVICE: FORBIDDEN},
        )
    ],
    ("POST", "/api/v1/competitions"): [
        Case(
            "create",
            lambda w, c: Request(
                "/competitions", body=comp_body(f"{w.cid}-{c[:3]}", start_date="2026-11-10")
            ),
            {OUTSIDER: CREATED, PARTICIPANT: CREATED, ORGANIZER: CREATED, SERVICE: CREATED},
        )
    ],
    ("GET", "/api/v1/competitions"): [
        Case(
            "list",
            lambda w, c: Request("/competitions"),
            {OUTSIDER: OK, PARTICIPANT: OK, ORGANIZER: OK, SERVICE: OK},
        )
    ],
    ("GET", "/api/v1/competitions/{competition_id}"): [
        # SPEC §3 / API.md: anyone signed in may read one by its id (its invitation).
        Case(
            "read",
            lambda w, c: Request(f"/competitions/{w.cid}"),
            {OUTSIDER: OK, PARTICIPANT: OK, ORGANIZER: OK, SERVICE: OK},
        )
    ],
    ("PATCH", "/api/v1/competitions/{competition_id}"): [
        Case(
            "edit",
            lambda w, c: Request(f"/competitions/{w.cid}", body={"name": "Taken over"}),
            organizers(OK),
        )
    ],
    ("POST", "/api/v1/competitions/{competition_id}/join"): [
        Case(
            "join as oneself",
            lambda w, c: Request(f"/competitions/{w.cid}/join"),
            {
                OUTSIDER: OK,
                PARTICIPANT: (409, "already_joined"),
                ORGANIZER: OK,
                SERVICE: (422, "validation_error"),  # the service role names whom
            },
        ),
        Case(
            "join another user",
            lambda w, c: Request(f"/competitions/{w.cid}/join", body={"user_id": w.newcomer}),
            {OUTSIDER: FORBIDDEN, PARTICIPANT: FORBIDDEN, ORGANIZER: FORBIDDEN, SERVICE: OK},
        ),
    ],
    ("POST", "/api/v1/competitions/{competition_id}/leave"): [
        Case(
            "leave as oneself",
            lambda w, c: Request(f"/competitions/{w.cid}/leave"),
            # Its id is its invitation (anyone may read and join it): not being in it is
            # no secret about anyone else.
            {
                OUTSIDER: (409, "not_joined"),
                PARTICIPANT: OK,
                ORGANIZER: (409, "not_joined"),
                SERVICE: (422, "validation_error"),
            },
        ),
        Case(
            "take another participant out",
            lambda w, c: Request(f"/competitions/{w.cid}/leave", body={"user_id": w.target}),
            {OUTSIDER: FORBIDDEN, PARTICIPANT: FORBIDDEN, ORGANIZER: FORBIDDEN, SERVICE: OK},
        ),
    ],
    ("POST", "/api/v1/competitions/{competition_id}/cancel"): [
        Case("cancel", lambda w, c: Request(f"/competitions/{w.cid}/cancel"), organizers(OK))
    ],
    ("GET", "/api/v1/competitions/{competition_id}/audit"): [
        Case("audit", lambda w, c: Request(f"/competitions/{w.cid}/audit"), members(OK))
    ],
    ("POST", "/api/v1/fitness/sync"): [
        Case(
            "sync naming the competition",
            lambda w, c: Request(
                "/fitness/sync",
                body=_target_record(
                    w, c, competition_id=w.cid, **({"user_id": w.target} if c == SERVICE else {})
                ),
            ),
            {
                # API.md §6: naming a private competition one is not in is the unknown-id
                # 404 (a sync cannot probe who takes part where), the organizer included.
                OUTSIDER: hidden(NOT_PARTICIPANT),
                PARTICIPANT: OK,
                ORGANIZER: hidden(NOT_PARTICIPANT),
                SERVICE: OK,
            },
        ),
        Case(
            "sync another user's day",
            lambda w, c: Request("/fitness/sync", body=_target_record(w, c, user_id=w.target)),
            {
                OUTSIDER: FORBIDDEN,
                PARTICIPANT: FORBIDDEN,
                ORGANIZER: FORBIDDEN,
                SELF: OK,
                SERVICE: OK,
            },
        ),
    ],
    ("GET", "/api/v1/fitness/stats/{user_id}"): [
        Case("stats of a user", lambda w, c: Request(f"/fitness/stats/{w.target}"), own_account()),
        Case(
            "stats through the competition",
            lambda w, c: Request(f"/fitness/stats/{w.target}", {"competition_id": w.cid}),
            {**members(OK), SELF: OK},
        ),
    ],
    ("GET", "/api/v1/fitness/history/{user_id}"): [
        Case(
            "history of a user", lambda w, c: Request(f"/fitness/history/{w.target}"), own_account()
        ),
        Case(
            "history through the competition",
            lambda w, c: Request(f"/fitness/history/{w.target}", {"competition_id": w.cid}),
            {**members(OK), SELF: OK},
        ),
    ],
    ("GET", "/api/v1/fitness/analytics/{competition_id}"): [
        Case("analytics", lambda w, c: Request(f"/fitness/analytics/{w.cid}"), members(OK))
    ],
    ("GET", "/api/v1/leaderboard/{competition_id}"): [
        Case(
            "board",
            lambda w, c: Request(f"/leaderboard/{w.cid}"),
            {OUTSIDER: hidden(OK), PARTICIPANT: OK, ORGANIZER: OK, SERVICE: OK},
        ),
        Case(
            "board around the target",
            lambda w, c: Request(f"/leaderboard/{w.cid}", {"around": w.target}),
            {OUTSIDER: hidden(OK), PARTICIPANT: OK, ORGANIZER: OK, SERVICE: OK},
        ),
    ],
    ("GET", "/api/v1/competitions/{competition_id}/participants"): [
        Case(
            "participants",
            lambda w, c: Request(f"/competitions/{w.cid}/participants"),
            members(OK),
        )
    ],
    ("POST", "/api/v1/leaderboard/update"): [
        Case(
            "set another participant's score",
            lambda w, c: Request(
                "/leaderboard/update",
                body={
                    "user_id": w.target,
                    "competition_id": w.cid,
                    "steps": 99_999,
                    "distance": 0,
                    "calories": 0,
                },
            ),
            organizers(OK),
        )
    ],
    ("GET", "/api/v1/users/{user_id}/competitions"): [
        Case(
            "a user's competitions",
            lambda w, c: Request(f"/users/{w.target}/competitions"),
            own_account(),
        )
    ],
    ("POST", "/api/v1/prizes/calculate/{competition_id}"): [
        Case("payout preview", lambda w, c: Request(f"/prizes/calculate/{w.cid}"), members(OK))
    ],
    ("POST", "/api/v1/prizes/distribute/{competition_id}"): [
        Case(
            "distribute (before the end: refused on its merits, not on access)",
            lambda w, c: Request(f"/prizes/distribute/{w.cid}"),
            organizers((409, "too_early")),
        )
    ],
    ("GET", "/api/v1/prizes/history/{user_id}"): [
        Case(
            "a user's payouts",
            lambda w, c: Request(f"/prizes/history/{w.target}"),
            own_account(),
        )
    ],
    ("GET", "/api/v1/competitions/{competition_id}/flags"): [
        Case(
            "flags",
            lambda w, c: Request(f"/competitions/{w.cid}/flags"),
            members(OK),  # a participant's own only (tests/domain/test_review_routes.py)
        )
    ],
    ("POST", "/api/v1/competitions/{competition_id}/flags/{flag_id}"): [
        Case(
            "review a flag",
            lambda w, c: Request(
                f"/competitions/{w.cid}/flags/1", body={"action": "exclude", "reason": "idor"}
            ),
            organizers((404, "flag_not_found")),
        )
    ],
    ("POST", "/api/v1/competitions/{competition_id}/participants/{user_id}/disqualify"): [
        Case(
            "disqualify another participant",
            lambda w, c: Request(
                f"/competitions/{w.cid}/participants/{w.target}/disqualify",
                body={"reason": "idor"},
            ),
            organizers(OK),
        )
    ],
    ("POST", "/api/v1/competitions/{competition_id}/participants/{user_id}/reinstate"): [
        Case(
            "reinstate another participant",
            lambda w, c: Request(
                f"/competitions/{w.cid}/participants/{w.target}/reinstate",
                body={"reason": "idor"},
            ),
            organizers(OK),  # not disqualified: nothing to do
        )
    ],
    WS: [
        Case(
            "live board",
            lambda w, c: Request(f"/ws/leaderboard/{w.cid}"),
            {OUTSIDER: hidden(OK), PARTICIPANT: OK, ORGANIZER: OK, SERVICE: OK},
        )
    ],
}

KEYS = [
    (op.method, op.template) for op in OPERATIONS if (op.method, op.template) not in PUBLIC_ROUTES
]
ROWS = [*KEYS, WS]


def test_every_operation_has_a_row() -> None:
    missing = [f"{m} {t}" for m, t in KEYS if (m, t) not in TABLE]
    assert missing == [], f"add these routes to the IDOR table: {missing}"
    stale = set(TABLE) - set(ROWS)
    assert stale == set(), f"the IDOR table names routes the schema no longer has: {stale}"
    assert len(KEYS) >= 20  # the schema was walked


# --- running a cell ----------------------------------------------------------------------------


@pytest.fixture
async def idor_app(
    redis_url: str, tmp_path: Path
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """An app of its own per test: its keys are only this test's worlds."""
    settings = make_settings(
        tmp_path,
        redis_url,
        rate_limit_ip_per_minute=1_000_000,
        rate_limit_user_per_minute=1_000_000,
        rate_limit_user_burst=1_000_000,
    )
    async with running_app(settings) as pair:
        yield pair


# Keys a request may touch whatever its answer: rate-limit state, the readiness probe,
# background leases, and how far the listing indexes were advanced.
def _volatile(key: str, prefix: str) -> bool:
    rest = key[len(prefix) + 1 :]
    return rest.startswith(("rl:", "lease:", "health")) or rest == "{ix}:asof"


async def snapshot(ctx: AppContext) -> dict[str, bytes | None]:
    prefix = ctx.settings.key_prefix
    keys = [
        k
        async for k in ctx.r.scan_iter(match=f"{prefix}:*", count=1000)
        if not _volatile(k if isinstance(k, str) else k.decode(), prefix)
    ]
    async with ctx.r.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.dump(key)
        dumps: list[bytes | None] = await pipe.execute()
    return {(k if isinstance(k, str) else k.decode()): d for k, d in zip(keys, dumps, strict=True)}


@dataclass
class Outcome:
    status: int
    error: str | None
    body: dict[str, Any]


async def call(
    app: FastAPI,
    client: httpx.AsyncClient,
    template: tuple[str, str],
    req: Request,
    w: World,
    caller: str,
) -> Outcome:
    method, _ = template
    if method == "WS":
        user = w.user(caller)
        jwt_token = (SERVICE_AUTH if user is None else auth(user))["Authorization"][7:]
        shake: Handshake = await ws_handshake(app.state.ctx, req.path, query=f"token={jwt_token}")
        if shake.close_code is None:
            assert [f["type"] for f in shake.frames] == ["connected", "leaderboard_update"]
            return Outcome(200, None, shake.frames[1])
        assert shake.close_code == 1008 and len(shake.frames) == 1, shake
        frame = shake.frames[0]
        return Outcome(frame["code"], frame["error"], frame)
    resp = await client.request(
        method, API + req.path, params=req.params, json=req.body, headers=w.headers(caller)
    )
    body: dict[str, Any] = resp.json()
    return Outcome(resp.status_code, None if body.get("success") else body.get("error"), body)


def _expected(cell: Cell, visibility: str) -> Answer:
    return cell[visibility] if isinstance(cell, dict) else cell


async def _same_as_unknown(
    app: FastAPI,
    client: httpx.AsyncClient,
    template: tuple[str, str],
    case: Case,
    w: World,
    caller: str,
    got: Outcome,
) -> str | None:
    """The 404 `got` is the one an unknown competition id gets, word for word."""
    ghost = World(f"ghost{w.cid}", w.organizer, w.participant, w.target, w.outsider, w.visibility)
    unknown = await call(app, client, template, case.request(ghost, caller), ghost, caller)
    mine = {**got.body, "message": got.body["message"].replace(w.cid, "<id>")}
    theirs = {**unknown.body, "message": unknown.body["message"].replace(ghost.cid, "<id>")}
    return None if mine == theirs else f"differs from an unknown id's: {mine} vs {theirs}"


@pytest.mark.parametrize("row", ROWS, ids=[f"{m} {t}" for m, t in ROWS])
async def test_each_caller_gets_the_answer_the_spec_gives(
    idor_app: tuple[FastAPI, httpx.AsyncClient], row: tuple[str, str]
) -> None:
    app, client = idor_app
    ctx: AppContext = app.state.ctx
    wrong: list[str] = []
    for visibility, case in itertools.product((PRIVATE, PUBLIC), TABLE[row]):
        # One world for as long as nothing changes it: after every call the keys are
        # compared; a refusal must have changed nothing, and a success that changed
        # something (a write) has the next cell start from a new world.
        w = await make_world(client, visibility)
        before = await snapshot(ctx)
        for caller, cell in case.answers.items():
            want = _expected(cell, visibility)
            got = await call(app, client, row, case.request(w, caller), w, caller)
            label = f"{case.name} as {caller} ({visibility})"
            if (got.status, got.error) != want:
                wrong.append(f"{label}: got {got.status} {got.error}, want {want[0]} {want[1]}")
            if want == NOT_FOUND == (got.status, got.error):
                differs = await _same_as_unknown(app, client, row, case, w, caller, got)
                if differs:
                    wrong.append(f"{label}: {differs}")
            after = await snapshot(ctx)
            changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
            if changed and got.status >= 400:
                wrong.append(f"{label}: refused, yet it changed {changed}")
            if changed:
                w = await make_world(client, visibility)
                after = await snapshot(ctx)
            before = after
    assert wrong == [], "\n".join(wrong)
