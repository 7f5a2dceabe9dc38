"""Hostile input, the JWT matrix (issue 12, SPEC §3): every forged, misdirected or stale
token is refused on every protected operation and on the live leaderboard's WebSocket.

One app is configured as a Supabase project would be: `SUPABASE_URL` set (so the issuer
is checked and the key set comes from `{SUPABASE_URL}/auth/v1/.well-known/jwks.json`,
served on loopback), the HS256 secret and the default algorithms (HS256, ES256, RS256).
tests/core/test_auth.py proves each check once on `/users/me`, and
tests/test_auth_matrix.py every operation against a missing, anon, expired or foreign
token; here each attack goes to every operation of the OpenAPI schema, with a body the
route would accept, so that a path that verified a token by itself (the lean leaderboard
and sync, `healthcomp.lean`) and let one through would answer something else than 401;
to `/metrics` protected as in production; and to the WebSocket, both as `?token=` and as
the bearer subprotocol (tests/live/test_ws_auth_matrix.py repeats that on the wire).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi import FastAPI

from healthcomp.core.auth import ANON, SERVICE, USER
from healthcomp.core.context import AppContext
from healthcomp.live import socket as live
from tests.conftest import TEST_SECRET, assert_error, make_settings
from tests.core.support import running_app
from tests.core.test_auth import JWKSServer, Key
from tests.domain.helpers import API, comp_body
from tests.test_auth_matrix import PROTECTED, Operation

JWKS_PATH = "/auth/v1/.well-known/jwks.json"
ATTACKER_SET = "/attacker/jwks.json"  # published, but only a `jku` header points at it
EC_KEY = Key("ec-live", "ES256", ec.generate_private_key(ec.SECP256R1()))
RS_KEY = Key("rs-live", "RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048))
# The attacker's own key pair: never in the project's set.
STRANGER = Key("stranger", "ES256", ec.generate_private_key(ec.SECP256R1()))

# A competition every signed-in user may read (public) with a user in it: a token that got
# through would connect to its board, or be answered about it, instead of a 401.
CID = "open-board"
MEMBER = "member1"


# --- building tokens -------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _json_segment(value: dict[str, Any]) -> str:
    return _b64(json.dumps(value, separators=(",", ":")).encode())


@dataclass(frozen=True)
class Project:
    """The project the app trusts: where its issuer is."""

    base: str

    @property
    def issuer(self) -> str:
        return f"{self.base}/auth/v1"

    def claims(self, sub: str | None = MEMBER, **extra: Any) -> dict[str, Any]:
        """A user's claims as Supabase issues them for this project."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "sub": sub,
            "role": USER,
            "aud": USER,
            "iss": self.issuer,
            "iat": now,
            "exp": now + 3600,
        }
        claims.update(extra)
        return {k: v for k, v in claims.items() if v is not None}


def _unsigned(alg: str, claims: dict[str, Any], signature: str = "") -> str:
    return f"{_json_segment({'alg': alg, 'typ': 'JWT'})}.{_json_segment(claims)}.{signature}"


def _hmac_with_public_key(key: Key, claims: dict[str, Any]) -> str:
    """HS256 keyed with the PEM of a key the server trusts for ES256/RS256 (the classic
    algorithm confusion: a verifier that takes the key for the token's `alg` as is)."""
    head = _json_segment({"alg": "HS256", "typ": "JWT", "kid": key.kid})
    signing_input = f"{head}.{_json_segment(claims)}"
    digest = hmac.new(key.public_pem(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(digest)}"


def _with_payload(token: str, claims: dict[str, Any]) -> str:
    """A genuinely signed token with its payload swapped for another."""
    header, _, signature = token.split(".")
    return f"{header}.{_json_segment(claims)}.{signature}"


def _embedded_jwk(p: Project) -> str:
    # The key to check the signature is offered in the token's own header (RFC 7515 `jwk`).
    public = STRANGER.jwk()
    headers = {"kid": STRANGER.kid, "jwk": public}
    return jwt.encode(p.claims(), STRANGER.private, algorithm="ES256", headers=headers)


def _jku(p: Project) -> str:
    # The header names where to fetch the key set: the attacker's, which holds the kid.
    headers = {"kid": "attacker", "jku": f"{p.base}{ATTACKER_SET}"}
    return jwt.encode(p.claims(), STRANGER.private, algorithm="ES256", headers=headers)


def _anon_key(p: Project) -> str:
    # What a Supabase project hands out as its anon key: HS256 with the project's secret.
    now = int(time.time())
    claims = {"iss": "supabase", "ref": "proj", "role": ANON, "iat": now, "exp": now + 3600}
    return jwt.encode(claims, TEST_SECRET, algorithm="HS256")


# Each must be refused with 401 everywhere. The lambdas get the project the app trusts.
ATTACKS: dict[str, Callable[[Project], str]] = {
    "alg none": lambda p: _unsigned("none", p.claims()),
    "alg None, a signature kept": lambda p: _unsigned("None", p.claims(), "c2lnbmF0dXJl"),
    "HS256 keyed with the ES256 public key": lambda p: _hmac_with_public_key(EC_KEY, p.claims()),
    "HS256 keyed with the RS256 public key": lambda p: _hmac_with_public_key(RS_KEY, p.claims()),
    "wrong audience": lambda p: EC_KEY.sign(p.claims(aud="somebody-else")),
    "wrong issuer": lambda p: EC_KEY.sign(p.claims(iss="https://other.supabase.co/auth/v1")),
    "no issuer": lambda p: EC_KEY.sign(p.claims(iss=None)),
    "wrong issuer, HS256": lambda p: jwt.encode(
        p.claims(iss="https://other.supabase.co/auth/v1"), TEST_SECRET, algorithm="HS256"
    ),
    "expired": lambda p: EC_KEY.sign(p.claims(exp=int(time.time()) - 600)),
    "not yet valid (nbf)": lambda p: RS_KEY.sign(p.claims(nbf=int(time.time()) + 600)),
    "unknown kid": lambda p: STRANGER.sign(p.claims(), kid="no-such-kid"),
    "a known kid, another key": lambda p: STRANGER.sign(p.claims(), kid=EC_KEY.kid),
    "ES256 under the RS256 kid": lambda p: EC_KEY.sign(p.claims(), kid=RS_KEY.kid),
    "key in the jwk header": _embedded_jwk,
    "key set named by jku": _jku,
    "anon key": _anon_key,
    "role anon, signed by the project": lambda p: EC_KEY.sign(p.claims(role=ANON)),
    "tampered payload: another user": lambda p: _with_payload(
        EC_KEY.sign(p.claims("alice")), p.claims("mallory")
    ),
    "tampered payload: made service_role": lambda p: _with_payload(
        EC_KEY.sign(p.claims("alice")), {"role": SERVICE, "exp": int(time.time()) + 3600}
    ),
    "tampered HS256 payload": lambda p: _with_payload(
        jwt.encode(p.claims("alice"), TEST_SECRET, algorithm="HS256"), p.claims("mallory")
    ),
    "exp a string": lambda p: EC_KEY.sign(p.claims(exp="9999999999")),
    # Signed by the project, but no date: an integer beyond any float was a 500.
    "exp of 400 digits": lambda p: EC_KEY.sign(p.claims(exp=10**400)),
    "nbf of -400 digits": lambda p: jwt.encode(p.claims(nbf=-(10**400)), TEST_SECRET, "HS256"),
    "exp Infinity": lambda p: EC_KEY.sign(p.claims(exp=float("inf"))),
    "no sub for a user": lambda p: EC_KEY.sign(p.claims(sub=None)),
    "sub not an id": lambda p: EC_KEY.sign(p.claims(sub="a:{b}*")),
}

# The controls: the same requests with these get past authentication.
VALID: dict[str, Callable[[Project], str]] = {
    "HS256 user": lambda p: jwt.encode(p.claims(), TEST_SECRET, algorithm="HS256"),
    "ES256 user": lambda p: EC_KEY.sign(p.claims()),
    "RS256 user": lambda p: RS_KEY.sign(p.claims()),
    "service key": lambda p: jwt.encode(
        {"iss": "supabase", "role": SERVICE, "exp": int(time.time()) + 3600},
        TEST_SECRET,
        algorithm="HS256",
    ),
}

# A body each route would accept (or get to the point of judging its ids), so that a
# token let through anywhere is answered by the route, not by validation.
BODIES: dict[tuple[str, str], Any] = {
    ("PUT", "/api/v1/users/me/profile"): {"display_name": "Mallory"},
    ("POST", "/api/v1/competitions"): comp_body("forged"),
    ("PATCH", "/api/v1/competitions/{competition_id}"): {"name": "Taken over"},
    ("POST", "/api/v1/competitions/{competition_id}/join"): None,
    ("POST", "/api/v1/competitions/{competition_id}/leave"): None,
    ("POST", "/api/v1/competitions/{competition_id}/cancel"): None,
    ("POST", "/api/v1/fitness/sync"): {"date": "2026-11-05", "steps": 100, "source": "phone"},
    ("POST", "/api/v1/leaderboard/update"): {
        "user_id": MEMBER,
        "competition_id": CID,
        "steps": 1,
        "distance": 0,
        "calories": 0,
    },
    ("POST", "/api/v1/prizes/calculate/{competition_id}"): None,
    ("POST", "/api/v1/competitions/{competition_id}/flags/{flag_id}"): {
        "action": "dismiss",
        "reason": "forged",
    },
    ("POST", "/api/v1/competitions/{competition_id}/participants/{user_id}/disqualify"): {
        "reason": "forged"
    },
    ("POST", "/api/v1/competitions/{competition_id}/participants/{user_id}/reinstate"): {
        "reason": "forged"
    },
}


def _url(op: Operation) -> str:
    """The operation on the public competition and its member (flag ids: 1)."""
    return (
        op.template.replace("{competition_id}", CID)
        .replace("{user_id}", MEMBER)
        .replace("{flag_id}", "1")
    )


async def _call(client: httpx.AsyncClient, op: Operation, jwt_token: str) -> httpx.Response:
    body = BODIES.get((op.method, op.template))
    return await client.request(
        op.method, _url(op), headers={"Authorization": f"Bearer {jwt_token}"}, json=body
    )


# --- the app ---------------------------------------------------------------------------------


@contextlib.contextmanager
def served_project() -> Iterator[tuple[Project, JWKSServer]]:
    """The project's key set, and the attacker's, served on loopback."""
    server = JWKSServer()
    server.start()
    server.documents[JWKS_PATH] = {"keys": [EC_KEY.jwk(), RS_KEY.jwk()]}
    server.documents[ATTACKER_SET] = {"keys": [{**STRANGER.jwk(), "kid": "attacker"}]}
    try:
        yield Project(server.base), server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def project() -> Iterator[tuple[Project, JWKSServer]]:
    with served_project() as made:
        yield made


@pytest.fixture(scope="module")
async def world(
    project: tuple[Project, JWKSServer],
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    p, _ = project
    settings = make_settings(
        tmp_path_factory.mktemp("tokens"),
        redis_url,
        supabase_url=p.base,
        jwks_min_refetch_seconds=60,  # an unknown kid costs one fetch a minute at most
        metrics="protected",  # as in production: /metrics for the service role
        rate_limit_ip_per_minute=1_000_000,
        rate_limit_user_per_minute=1_000_000,
        rate_limit_user_burst=1_000_000,
    )
    async with running_app(settings) as (app, client):
        org = {"Authorization": f"Bearer {VALID['HS256 user'](Project(p.base))}"}
        # The organizer is MEMBER here; it is public so that any user reads its board.
        body = comp_body(CID, visibility="public", start_date="2026-11-03")
        resp = await client.post(f"{API}/competitions", json=body, headers=org)
        assert resp.status_code == 201, resp.text
        resp = await client.post(f"{API}/competitions/{CID}/join", headers=org)
        assert resp.status_code == 200, resp.text
        yield app, client


def test_every_body_operation_has_a_body() -> None:
    """A route added later with a body must say here what it accepts."""
    missing = [op.id for op in PROTECTED if op.has_body and (op.method, op.template) not in BODIES]
    assert missing == [], f"add a body these routes accept to BODIES: {missing}"
    stale = set(BODIES) - {(op.method, op.template) for op in PROTECTED}
    assert stale == set(), f"BODIES names routes the schema no longer has: {stale}"


@pytest.mark.parametrize("attack", list(ATTACKS), ids=list(ATTACKS))
async def test_a_forged_token_is_401_on_every_operation(
    world: tuple[FastAPI, httpx.AsyncClient], project: tuple[Project, JWKSServer], attack: str
) -> None:
    _, client = world
    p, server = project
    forged = ATTACKS[attack](p)
    wrong: list[str] = []
    for op in PROTECTED:
        resp = await _call(client, op, forged)
        if resp.status_code != 401:
            wrong.append(f"{op.id}: {resp.status_code} {resp.text[:160]}")
            continue
        body = assert_error(resp, 401, "unauthorized")
        assert resp.headers.get("www-authenticate") == "Bearer", (op.id, resp.headers)
        assert forged not in json.dumps(body), op.id  # the token is never echoed
    # /metrics, protected as in production, takes the service role's token: not this one.
    resp = await client.get("/metrics", headers={"Authorization": f"Bearer {forged}"})
    if resp.status_code != 401:
        wrong.append(f"GET /metrics (protected): {resp.status_code} {resp.text[:160]}")
    assert wrong == [], "\n".join(wrong)
    # Nothing a token names is fetched: only the project's own set, and only on a schedule.
    assert ATTACKER_SET not in server.hits


@pytest.mark.parametrize("control", list(VALID), ids=list(VALID))
async def test_the_same_calls_with_a_valid_token_get_past_authentication(
    world: tuple[FastAPI, httpx.AsyncClient], project: tuple[Project, JWKSServer], control: str
) -> None:
    """The control that lets the matrix above fail: with a good token every one of those
    requests reaches its route, so a 401 there is about the token."""
    _, client = world
    valid = VALID[control](project[0])
    for op in PROTECTED:
        if op.method != "GET":
            continue  # the reads suffice; the writes would change the world the matrix uses
        resp = await _call(client, op, valid)
        assert resp.status_code not in (401, 500), (op.id, resp.text)
    resp = await client.get("/metrics", headers={"Authorization": f"Bearer {valid}"})
    assert resp.status_code == (200 if control == "service key" else 403), resp.text
    # The lean paths serve these: a leaderboard page and a sync (service: it names a user).
    resp = await client.get(
        f"{API}/leaderboard/{CID}", headers={"Authorization": f"Bearer {valid}"}
    )
    assert resp.status_code == 200, resp.text
    record: dict[str, Any] = {"date": "2026-11-05", "steps": 5, "source": f"s-{control[:2]}"}
    if control == "service key":
        record["user_id"] = MEMBER
    resp = await client.post(
        f"{API}/fitness/sync", json=record, headers={"Authorization": f"Bearer {valid}"}
    )
    assert resp.status_code == 200, resp.text


# --- the WebSocket, in process ---------------------------------------------------------------


@dataclass
class Handshake:
    """What the server sent on one WebSocket: the accept's subprotocol, the frames, the
    close code (None while open)."""

    accepted: bool
    subprotocol: str | None
    frames: list[dict[str, Any]]
    close_code: int | None


async def ws_handshake(
    ctx: AppContext, path: str, *, query: str = "", subprotocols: list[str] | None = None
) -> Handshake:
    """One connection driven through `live.serve` (what `healthcomp serve` runs for the
    WebSocket), held until it closes or has sent two frames, then left."""
    incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    incoming.put_nowait({"type": "websocket.connect"})
    sent: list[dict[str, Any]] = []
    changed = asyncio.Event()

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        changed.set()
        if message["type"] == "websocket.close":
            incoming.put_nowait({"type": "websocket.disconnect", "code": message["code"]})

    scope = {
        "type": "websocket",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "headers": [],
        "subprotocols": subprotocols or [],
        "client": ("127.0.0.1", 50000),
        "extensions": {},
    }
    task = asyncio.get_running_loop().create_task(live.serve(ctx, scope, incoming.get, send))

    def frames() -> list[dict[str, Any]]:
        return [orjson.loads(m["text"]) for m in sent if m["type"] == "websocket.send"]

    task.add_done_callback(lambda _: changed.set())
    deadline = time.monotonic() + 5
    while not task.done() and len(frames()) < 2:
        changed.clear()
        try:
            await asyncio.wait_for(changed.wait(), deadline - time.monotonic())
        except TimeoutError:
            break
    if not task.done():
        incoming.put_nowait({"type": "websocket.disconnect", "code": 1000})
        await asyncio.wait_for(task, 5)
    accept = next((m for m in sent if m["type"] == "websocket.accept"), None)
    close = next((m for m in sent if m["type"] == "websocket.close"), None)
    return Handshake(
        accepted=accept is not None,
        subprotocol=accept.get("subprotocol") if accept else None,
        frames=frames(),
        close_code=close["code"] if close else None,
    )


def _refused_with_1008(shake: Handshake, error: str = "unauthorized", code: int = 401) -> None:
    """Accepted only to say why: one error frame, no data, then 1008."""
    assert shake.close_code == 1008, shake
    assert len(shake.frames) == 1, shake.frames
    frame = shake.frames[0]
    assert (frame["type"], frame["error"], frame["code"]) == ("error", error, code), frame
    assert set(frame) == {"type", "error", "message", "code"}, frame


TRANSPORTS = ["query", "subprotocol"]


async def _ws(ctx: AppContext, jwt_token: str, transport: str) -> Handshake:
    path = f"/ws/leaderboard/{CID}"
    if transport == "query":
        return await ws_handshake(ctx, path, query=f"token={jwt_token}")
    return await ws_handshake(ctx, path, subprotocols=["bearer", jwt_token])


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("attack", list(ATTACKS), ids=list(ATTACKS))
async def test_a_forged_token_closes_the_websocket_with_1008(
    world: tuple[FastAPI, httpx.AsyncClient],
    project: tuple[Project, JWKSServer],
    attack: str,
    transport: str,
) -> None:
    app, _ = world
    shake = await _ws(app.state.ctx, ATTACKS[attack](project[0]), transport)
    _refused_with_1008(shake)
    # A browser reads the refusal only if the subprotocol it offered is accepted.
    assert shake.subprotocol == ("bearer" if transport == "subprotocol" else None)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("control", list(VALID), ids=list(VALID))
async def test_a_valid_token_opens_the_websocket(
    world: tuple[FastAPI, httpx.AsyncClient],
    project: tuple[Project, JWKSServer],
    control: str,
    transport: str,
) -> None:
    app, _ = world
    shake = await _ws(app.state.ctx, VALID[control](project[0]), transport)
    assert [f["type"] for f in shake.frames] == ["connected", "leaderboard_update"], shake
    assert shake.frames[1]["total_count"] == 1
    assert shake.close_code is None  # open until the client left


@pytest.mark.parametrize(
    ("query", "subprotocols"),
    [
        ("", []),
        ("token=", []),
        ("", ["bearer"]),
        ("", ["bearer", "not-a-jwt"]),
        ("token=a.b.c", []),
        ("", ["bearer", "a.b.c"]),
    ],
    ids=["nothing", "empty query token", "bearer alone", "bearer garbage", "q 3 dots", "p 3 dots"],
)
async def test_no_usable_token_closes_the_websocket_with_1008(
    world: tuple[FastAPI, httpx.AsyncClient], query: str, subprotocols: list[str]
) -> None:
    app, _ = world
    shake = await ws_handshake(
        app.state.ctx, f"/ws/leaderboard/{CID}", query=query, subprotocols=subprotocols
    )
    _refused_with_1008(shake)


async def test_a_valid_query_token_does_not_rescue_a_forged_subprotocol_one(
    world: tuple[FastAPI, httpx.AsyncClient], project: tuple[Project, JWKSServer]
) -> None:
    """Two tokens, one forged: the connection is refused, whichever is read."""
    app, _ = world
    p = project[0]
    good, forged = VALID["ES256 user"](p), ATTACKS["tampered payload: made service_role"](p)
    shake = await ws_handshake(
        app.state.ctx,
        f"/ws/leaderboard/{CID}",
        query=f"token={good}",
        subprotocols=["bearer", forged],
    )
    _refused_with_1008(shake)
