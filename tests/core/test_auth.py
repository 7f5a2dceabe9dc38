"""SPEC §3: which tokens are accepted, which are refused, and where the keys come from."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import stat
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from pydantic import ValidationError

from healthcomp.app import create_app
from healthcomp.core.auth import (
    Authenticator,
    KeySourceMissing,
    load_or_create_dev_secret,
    mint_token,
)
from healthcomp.core.errors import Unauthorized
from healthcomp.core.settings import Settings
from tests.conftest import (
    TEST_SECRET,
    assert_error,
    auth,
    clear_settings_env,
    make_settings,
    token,
)
from tests.core.support import running_app

ME = "/api/v1/users/me"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _segments(header: dict[str, Any], claims: dict[str, Any]) -> str:
    raw_header = json.dumps(header, separators=(",", ":")).encode()
    raw_claims = json.dumps(claims, separators=(",", ":")).encode()
    return f"{_b64(raw_header)}.{_b64(raw_claims)}"


def user_claims(sub: str | None = "alice", **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": sub,
        "role": "authenticated",
        "aud": "authenticated",
        "iat": now,
        "exp": now + 3600,
    }
    claims.update(extra)
    return {k: v for k, v in claims.items() if v is not None}


def hs256(claims: dict[str, Any], secret: str = TEST_SECRET, **headers: Any) -> str:
    return jwt.encode(claims, secret, algorithm="HS256", headers=headers or None)


def bearer(jwt_token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {jwt_token}"}


# --- the HS256 matrix on the default app (SUPABASE_JWT_SECRET, no SUPABASE_URL) ------------


def _alg_none() -> str:
    return _segments({"alg": "none", "typ": "JWT"}, user_claims()) + "."


def _now() -> int:
    return int(time.time())


REFUSED: dict[str, dict[str, str]] = {
    "no header": {},
    "not bearer": {"Authorization": "Token x"},
    "bearer without token": {"Authorization": "Bearer"},
    "two segments": {"Authorization": "Bearer a.b"},
    "garbage": {"Authorization": "Bearer not-a-jwt-at-all"},
}


@pytest.mark.parametrize("headers", list(REFUSED.values()), ids=list(REFUSED))
async def test_malformed_or_missing_header_is_401(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    resp = await client.get(ME, headers=headers)
    assert_error(resp, 401, "unauthorized")
    assert resp.headers["www-authenticate"] == "Bearer"


BAD_TOKENS = {
    "wrong secret": lambda: hs256(user_claims(), "another-secret-" + "y" * 40),
    "alg none": _alg_none,
    "alg none, signature kept": lambda: _segments({"alg": "none"}, user_claims()) + ".c2ln",
    "expired beyond leeway": lambda: hs256(user_claims(exp=_now() - 60)),
    "no exp": lambda: hs256(user_claims(exp=None)),
    "nbf in the future": lambda: hs256(user_claims(nbf=_now() + 120)),
    "wrong aud": lambda: hs256(user_claims(aud="somebody-else")),
    "no aud": lambda: hs256(user_claims(aud=None)),
    "missing sub": lambda: hs256(user_claims(sub=None)),
    "sub not an id": lambda: hs256(user_claims(sub="a:b}{")),
    "role anon": lambda: hs256(user_claims(role="anon", aud=None, sub=None)),
    "anon with sub and aud": lambda: hs256(user_claims(role="anon")),
    "unknown role": lambda: hs256(user_claims(role="admin")),
    "no role": lambda: hs256(user_claims(role=None)),
    "tampered payload": lambda: _tampered(),
}


def _tampered() -> str:
    good = hs256(user_claims("alice"))
    header, _, signature = good.split(".")
    payload = _segments({}, user_claims("mallory")).split(".")[1]
    return f"{header}.{payload}.{signature}"


@pytest.mark.parametrize("make", list(BAD_TOKENS.values()), ids=list(BAD_TOKENS))
async def test_bad_token_is_401(client: httpx.AsyncClient, make: Any) -> None:
    assert_error(await client.get(ME, headers=bearer(make())), 401, "unauthorized")


async def test_valid_user_token(client: httpx.AsyncClient) -> None:
    resp = await client.get(ME, headers=bearer(hs256(user_claims("alice"))))
    assert resp.status_code == 200, resp.text
    assert resp.json()["success"] is True
    assert resp.json()["data"]["user_id"] == "alice"


async def test_aud_as_list_and_lowercase_scheme(client: httpx.AsyncClient) -> None:
    good = hs256(user_claims("alice", aud=["other", "authenticated"]))
    resp = await client.get(ME, headers={"Authorization": f"bearer {good}"})
    assert resp.status_code == 200, resp.text


# Supabase sends the string "authenticated" (some issuers send a list): the match is on a
# whole audience, never a substring or a prefix.
AUDIENCES: list[tuple[Any, bool]] = [
    ("authenticated", True),
    (["authenticated", "other"], True),
    (["other", "authenticated"], True),
    ("notauthenticated", False),
    ("authenticated-x", False),
    ("authenticate", False),
    ("Authenticated", False),
    (" authenticated", False),
    ("", False),
    (["authenticatedx"], False),
    (["authenticated-x", "notauthenticated"], False),
    ([["authenticated"]], False),
    ([], False),
]


@pytest.mark.parametrize(("aud", "accepted"), AUDIENCES, ids=[repr(a) for a, _ in AUDIENCES])
async def test_aud_is_matched_exactly(client: httpx.AsyncClient, aud: Any, accepted: bool) -> None:
    resp = await client.get(ME, headers=bearer(hs256(user_claims("alice", aud=aud))))
    if accepted:
        assert resp.status_code == 200, resp.text
        assert resp.json()["data"]["user_id"] == "alice"
    else:
        assert_error(resp, 401, "unauthorized")


BAD_TIME_CLAIMS = {
    "exp a numeric string": lambda: {"exp": "9999999999"},
    "exp a string": lambda: {"exp": "tomorrow"},
    "exp true": lambda: {"exp": True},
    "exp null": lambda: {"exp": None},
    "exp a list": lambda: {"exp": [_now() + 3600]},
    "nbf in the future": lambda: {"nbf": _now() + 3600},
    "nbf a numeric string": lambda: {"nbf": "0"},
    "nbf a future string": lambda: {"nbf": "9999999999"},
    "nbf false": lambda: {"nbf": False},
    "iat a numeric string": lambda: {"iat": str(_now())},
}


@pytest.mark.parametrize("claims", list(BAD_TIME_CLAIMS.values()), ids=list(BAD_TIME_CLAIMS))
async def test_time_claims_must_be_numbers_in_range(client: httpx.AsyncClient, claims: Any) -> None:
    # Built by hand: user_claims() drops None values, and `exp: null` must reach the server.
    payload = {**user_claims("alice"), **claims()}
    assert_error(await client.get(ME, headers=bearer(hs256(payload))), 401, "unauthorized")


async def test_fractional_time_claims_are_accepted(client: httpx.AsyncClient) -> None:
    # RFC 7519 NumericDate may carry a fraction; refusing non-numbers must not refuse these.
    now = time.time()
    claims = user_claims("alice", iat=now - 1.5, nbf=now - 1.5, exp=now + 3600.5)
    resp = await client.get(ME, headers=bearer(hs256(claims)))
    assert resp.status_code == 200, resp.text


async def test_leeway_is_small_but_there(client: httpx.AsyncClient) -> None:
    # 10 s past `exp` and 10 s before `nbf` are inside the 30 s leeway.
    resp = await client.get(ME, headers=bearer(hs256(user_claims(exp=_now() - 10))))
    assert resp.status_code == 200, resp.text
    resp = await client.get(ME, headers=bearer(hs256(user_claims(nbf=_now() + 10))))
    assert resp.status_code == 200, resp.text


async def test_service_role_is_not_a_user(client: httpx.AsyncClient) -> None:
    # Exactly what Supabase issues as the service key: no sub, no aud.
    now = _now()
    service = hs256(
        {"iss": "supabase", "ref": "proj", "role": "service_role", "iat": now, "exp": now + 60}
    )
    resp = await client.get(ME, headers=bearer(service))
    assert_error(resp, 403, "forbidden")


async def test_default_display_name(client: httpx.AsyncClient) -> None:
    named = token("u-named", name="Ada Lovelace", email="ada@example.com")
    resp = await client.get(ME, headers=bearer(named))
    assert resp.status_code == 200, resp.text
    assert resp.json()["data"]["display_name"] == "Ada Lovelace"
    assert resp.json()["data"]["email"] == "ada@example.com"

    resp = await client.get(ME, headers=auth("u-mailed", email="grace.hopper@example.com"))
    assert resp.json()["data"]["display_name"] == "grace.hopper"

    resp = await client.get(ME, headers=auth("u-bare"))
    assert resp.json()["data"]["display_name"] == "u-bare"


# --- issuer, with SUPABASE_URL set ---------------------------------------------------------


async def test_issuer_checked_when_supabase_url_set(tmp_path: Path, redis_url: str) -> None:
    base = "http://127.0.0.1:9"  # never contacted: HS256 only, so no JWKS
    settings = make_settings(tmp_path, redis_url, supabase_url=base, jwt_algorithms=["HS256"])
    async with running_app(settings) as (_, client):
        good = hs256(user_claims(iss=f"{base}/auth/v1"))
        assert (await client.get(ME, headers=bearer(good))).status_code == 200
        for iss in ("http://127.0.0.1:10/auth/v1", f"{base}/auth/v1/", base, None):
            bad = hs256(user_claims(iss=iss))
            assert_error(await client.get(ME, headers=bearer(bad)), 401, "unauthorized")
        # The service key carries Supabase's own `iss`; it works as issued.
        service = mint_token(TEST_SECRET, user_id=None, role="service_role")
        assert_error(await client.get(ME, headers=bearer(service)), 403, "forbidden")


# --- JWKS (ES256, RS256) against a real HTTP server on loopback ----------------------------


@dataclass
class JWKSServer:
    """Serves `documents[path]` as JSON and counts the requests per path."""

    documents: dict[str, Any] = field(default_factory=dict)
    hits: dict[str, int] = field(default_factory=dict)
    port: int = 0
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    def start(self) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hits[self.path] = outer.hits.get(self.path, 0) + 1
                if self.path not in outer.documents:
                    self.send_error(404)
                    return
                doc = outer.documents[self.path]
                body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.02,), daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def total(self) -> int:
        return sum(self.hits.values())


@pytest.fixture
def jwks_server() -> Iterator[JWKSServer]:
    server = JWKSServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@dataclass(frozen=True)
class Key:
    kid: str
    alg: str
    private: Any

    def jwk(self) -> dict[str, Any]:
        algorithm = ECAlgorithm if self.alg == "ES256" else RSAAlgorithm
        doc: dict[str, Any] = algorithm.to_jwk(self.private.public_key(), as_dict=True)
        return {**doc, "kid": self.kid, "alg": self.alg, "use": "sig"}

    def sign(self, claims: dict[str, Any], *, kid: str | None = None) -> str:
        return jwt.encode(
            claims, self.private, algorithm=self.alg, headers={"kid": kid or self.kid}
        )

    def public_pem(self) -> bytes:
        return bytes(
            self.private.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )


def ec_key(kid: str) -> Key:
    return Key(kid, "ES256", ec.generate_private_key(ec.SECP256R1()))


_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC1 = ec_key("ec-1")
RS1 = Key("rs-1", "RS256", _RSA)
PATH = "/jwks.json"


def publish(server: JWKSServer, *keys: Key, path: str = PATH) -> None:
    server.documents[path] = {"keys": [k.jwk() for k in keys]}


def jwks_settings(tmp_path: Path, redis_url: str, server: JWKSServer, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "supabase_url": None,
        "jwks_url": f"{server.base}{PATH}",
        "supabase_jwt_secret": None,
        "jwt_algorithms": ["ES256", "RS256"],
        "jwks_min_refetch_seconds": 0,
    }
    values.update(overrides)
    return make_settings(tmp_path, redis_url, **values)


@pytest.fixture
async def jwks_client(
    tmp_path: Path, redis_url: str, jwks_server: JWKSServer
) -> AsyncIterator[httpx.AsyncClient]:
    publish(jwks_server, EC1, RS1)
    async with running_app(jwks_settings(tmp_path, redis_url, jwks_server)) as (_, client):
        yield client


async def test_es256_and_rs256_verify(jwks_client: httpx.AsyncClient) -> None:
    resp = await jwks_client.get(ME, headers=bearer(EC1.sign(user_claims("ec-user"))))
    assert resp.status_code == 200, resp.text
    assert resp.json()["data"]["user_id"] == "ec-user"
    resp = await jwks_client.get(ME, headers=bearer(RS1.sign(user_claims("rs-user"))))
    assert resp.status_code == 200, resp.text
    assert resp.json()["data"]["user_id"] == "rs-user"


async def test_jwks_token_checks_still_apply(jwks_client: httpx.AsyncClient) -> None:
    stranger = ec_key(EC1.kid)  # same kid, different key
    for bad in (
        stranger.sign(user_claims()),
        EC1.sign(user_claims(exp=_now() - 120)),
        EC1.sign(user_claims(aud="nope")),
        EC1.sign(user_claims(role="anon")),
        jwt.encode(user_claims(), EC1.private, algorithm="ES256"),  # no kid
        RS1.sign(user_claims(), kid=EC1.kid),  # RS256 against the EC key
        jwt.encode(user_claims(), _RSA, algorithm="RS256", headers={"kid": EC1.kid}),
    ):
        assert_error(await jwks_client.get(ME, headers=bearer(bad)), 401, "unauthorized")


async def test_key_set_is_cached(jwks_client: httpx.AsyncClient, jwks_server: JWKSServer) -> None:
    for _ in range(3):
        resp = await jwks_client.get(ME, headers=bearer(EC1.sign(user_claims())))
        assert resp.status_code == 200, resp.text
    resp = await jwks_client.get(ME, headers=bearer(RS1.sign(user_claims())))
    assert resp.status_code == 200, resp.text
    assert jwks_server.hits == {PATH: 1}


async def test_key_set_expires(tmp_path: Path, redis_url: str, jwks_server: JWKSServer) -> None:
    publish(jwks_server, EC1)
    # model_construct skips the 10 s floor, so the TTL can be short here.
    settings = jwks_settings(
        tmp_path, redis_url, jwks_server, jwks_cache_seconds=0.2, jwks_min_refetch_seconds=60
    )
    async with running_app(settings) as (_, client):
        good = bearer(EC1.sign(user_claims()))
        assert (await client.get(ME, headers=good)).status_code == 200
        assert (await client.get(ME, headers=good)).status_code == 200
        assert jwks_server.total() == 1
        await asyncio.sleep(0.25)
        assert (await client.get(ME, headers=good)).status_code == 200
        assert jwks_server.total() == 2
        # A key withdrawn from the set stops working once the cache has expired.
        publish(jwks_server, RS1)
        await asyncio.sleep(0.25)
        assert_error(await client.get(ME, headers=good), 401, "unauthorized")


async def test_key_rotation(jwks_client: httpx.AsyncClient, jwks_server: JWKSServer) -> None:
    assert (await jwks_client.get(ME, headers=bearer(EC1.sign(user_claims())))).status_code == 200
    assert jwks_server.total() == 1
    new = ec_key("ec-2")
    publish(jwks_server, new, EC1, RS1)
    resp = await jwks_client.get(ME, headers=bearer(new.sign(user_claims("rotated"))))
    assert resp.status_code == 200, resp.text
    assert jwks_server.total() == 2
    # Both keys are known now; neither costs a fetch.
    assert (await jwks_client.get(ME, headers=bearer(new.sign(user_claims())))).status_code == 200
    assert (await jwks_client.get(ME, headers=bearer(EC1.sign(user_claims())))).status_code == 200
    assert jwks_server.total() == 2


async def test_unknown_kid_flood_is_rate_limited(
    tmp_path: Path, redis_url: str, jwks_server: JWKSServer
) -> None:
    publish(jwks_server, EC1)
    window = 0.4
    settings = jwks_settings(tmp_path, redis_url, jwks_server, jwks_min_refetch_seconds=window)
    async with running_app(settings) as (_, client):
        assert (await client.get(ME, headers=bearer(EC1.sign(user_claims())))).status_code == 200
        assert jwks_server.total() == 1

        async def forged(i: int) -> httpx.Response:
            return await client.get(ME, headers=bearer(EC1.sign(user_claims(), kid=f"made-up-{i}")))

        started = time.monotonic()
        responses = await asyncio.gather(*(forged(i) for i in range(40)))
        elapsed = time.monotonic() - started
        for resp in responses:
            assert_error(resp, 401, "unauthorized")
        # At most one fetch per window (none at all if the flood fit in the first one).
        assert jwks_server.total() - 1 <= 1 + elapsed / window

        # A real new key is picked up by the one fetch the next window allows, whoever
        # triggers it: the forged kids around it cost no more.
        new = ec_key("ec-late")
        publish(jwks_server, EC1, new)
        await asyncio.sleep(window + 0.1)
        before = jwks_server.total()
        started = time.monotonic()
        responses = await asyncio.gather(
            *(forged(i) for i in range(40, 60)),
            client.get(ME, headers=bearer(new.sign(user_claims("late")))),
            *(forged(i) for i in range(60, 80)),
        )
        elapsed = time.monotonic() - started
        assert responses[20].status_code == 200, responses[20].text
        for resp in responses[:20] + responses[21:]:
            assert_error(resp, 401, "unauthorized")
        assert 1 <= jwks_server.total() - before <= 1 + elapsed / window


async def test_jwks_down_without_cached_keys_is_503(
    tmp_path: Path, redis_url: str, jwks_server: JWKSServer
) -> None:
    publish(jwks_server, EC1)
    settings = jwks_settings(tmp_path, redis_url, jwks_server)
    jwks_server.stop()
    async with running_app(settings) as (_, client):
        resp = await client.get(ME, headers=bearer(EC1.sign(user_claims())))
        assert_error(resp, 503, "service_unavailable")
        assert int(resp.headers["retry-after"]) > 0
        # Even while the key set is down, an HS256 token is not tried against anything.
        assert_error(await client.get(ME, headers=auth()), 401, "unauthorized")


async def test_a_key_set_that_cannot_be_fetched_is_not_fetched_per_token(
    tmp_path: Path, redis_url: str, jwks_server: JWKSServer
) -> None:
    """Issue 12: with no keys held and the set failing, every forged ES256 token made
    its own outbound fetch. Now a failure holds for `HC_JWKS_MIN_REFETCH_SECONDS`: the
    tokens meanwhile are 503 at once, and the next window tries again."""
    window = 0.5
    settings = jwks_settings(tmp_path, redis_url, jwks_server, jwks_min_refetch_seconds=window)
    # Nothing is published at the path yet: each fetch is a 404.
    async with running_app(settings) as (_, client):

        async def forged(i: int) -> httpx.Response:
            return await client.get(ME, headers=bearer(EC1.sign(user_claims(), kid=f"f-{i}")))

        responses = await asyncio.gather(*(forged(i) for i in range(30)))
        for resp in responses:
            assert_error(resp, 503, "service_unavailable")
        assert jwks_server.total() == 1
        for resp in await asyncio.gather(*(forged(i) for i in range(30, 60))):
            assert_error(resp, 503, "service_unavailable")
        assert jwks_server.total() == 1
        # The set comes back: after the window, one fetch, and real tokens pass.
        publish(jwks_server, EC1)
        await asyncio.sleep(window + 0.1)
        assert (await client.get(ME, headers=bearer(EC1.sign(user_claims())))).status_code == 200
        assert jwks_server.total() == 2


@pytest.mark.parametrize(
    ("document", "status", "error"),
    [
        (b"this is not json", 503, "service_unavailable"),
        (b"[1, 2, 3]", 503, "service_unavailable"),
        (b'{"keys": "nope"}', 503, "service_unavailable"),
        # A set without a usable key: fetched fine, the token's kid is just not in it.
        (b'{"keys": [1, "x", null, {"kty": "EC"}]}', 401, "unauthorized"),
    ],
    ids=["not json", "a list", "keys not a list", "keys unusable"],
)
async def test_jwks_garbage_is_not_a_500(
    tmp_path: Path,
    redis_url: str,
    jwks_server: JWKSServer,
    document: bytes,
    status: int,
    error: str,
) -> None:
    jwks_server.documents[PATH] = document
    async with running_app(jwks_settings(tmp_path, redis_url, jwks_server)) as (_, client):
        resp = await client.get(ME, headers=bearer(EC1.sign(user_claims())))
        assert_error(resp, status, error)
        # Fixed at the source: the next request fetches again and succeeds.
        publish(jwks_server, EC1)
        resp = await client.get(ME, headers=bearer(EC1.sign(user_claims())))
        assert resp.status_code == 200, resp.text


async def test_jwks_down_with_cached_keys_keeps_working(
    jwks_client: httpx.AsyncClient, jwks_server: JWKSServer
) -> None:
    good = bearer(EC1.sign(user_claims()))
    assert (await jwks_client.get(ME, headers=good)).status_code == 200
    jwks_server.stop()
    assert (await jwks_client.get(ME, headers=good)).status_code == 200
    # An unknown kid tries a refetch, which fails; the cached keys still answer.
    forged = bearer(EC1.sign(user_claims(), kid="unknown"))
    assert_error(await jwks_client.get(ME, headers=forged), 401, "unauthorized")
    assert (await jwks_client.get(ME, headers=good)).status_code == 200


async def test_only_configured_algorithms(
    tmp_path: Path, redis_url: str, jwks_server: JWKSServer
) -> None:
    publish(jwks_server, EC1, RS1)
    # A secret is configured too, but HS256 is not among the algorithms.
    settings = jwks_settings(
        tmp_path, redis_url, jwks_server, jwt_algorithms=["ES256"], supabase_jwt_secret=TEST_SECRET
    )
    async with running_app(settings) as (_, client):
        assert (await client.get(ME, headers=bearer(EC1.sign(user_claims())))).status_code == 200
        assert_error(await client.get(ME, headers=auth()), 401, "unauthorized")
        assert_error(
            await client.get(ME, headers=bearer(RS1.sign(user_claims()))), 401, "unauthorized"
        )


def _hs256_with_public_key(key: Key) -> str:
    signing_input = _segments({"alg": "HS256", "typ": "JWT", "kid": key.kid}, user_claims())
    signature = hmac.new(key.public_pem(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


@pytest.mark.parametrize("algorithms", [["ES256"], ["ES256", "HS256"]])
async def test_public_key_as_hmac_secret_is_refused(
    tmp_path: Path, redis_url: str, jwks_server: JWKSServer, algorithms: list[str]
) -> None:
    publish(jwks_server, EC1)
    settings = jwks_settings(
        tmp_path, redis_url, jwks_server, jwt_algorithms=algorithms, supabase_jwt_secret=TEST_SECRET
    )
    async with running_app(settings) as (_, client):
        # The key is fetched and known, so the refusal is about the algorithm.
        assert (await client.get(ME, headers=bearer(EC1.sign(user_claims())))).status_code == 200
        forged = _hs256_with_public_key(EC1)
        assert_error(await client.get(ME, headers=bearer(forged)), 401, "unauthorized")


async def test_issuer_with_supabase_jwks(
    tmp_path: Path, redis_url: str, jwks_server: JWKSServer
) -> None:
    publish(jwks_server, EC1, path="/auth/v1/.well-known/jwks.json")
    settings = make_settings(
        tmp_path,
        redis_url,
        supabase_url=jwks_server.base + "/",
        supabase_jwt_secret=None,
        jwt_algorithms=["ES256"],
        jwks_min_refetch_seconds=0,
    )
    settings = Settings.model_validate(settings.model_dump())  # strips the trailing slash
    issuer = f"{jwks_server.base}/auth/v1"
    assert settings.expected_issuer == issuer
    async with running_app(settings) as (_, client):
        resp = await client.get(ME, headers=bearer(EC1.sign(user_claims("iss-ok", iss=issuer))))
        assert resp.status_code == 200, resp.text
        for iss in (None, "https://other.supabase.co/auth/v1", jwks_server.base):
            bad = bearer(EC1.sign(user_claims(iss=iss)))
            assert_error(await client.get(ME, headers=bad), 401, "unauthorized")
    assert jwks_server.hits == {"/auth/v1/.well-known/jwks.json": 1}


# --- where the HS256 secret comes from -----------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clear_settings_env(monkeypatch)
    monkeypatch.chdir(tmp_path)  # no stray .env


@pytest.mark.usefixtures("clean_env")
def test_production_without_key_source_refuses_to_start(tmp_path: Path) -> None:
    settings = Settings(ENVIRONMENT="production", HC_DATA_DIR=tmp_path / "data")
    assert settings.supabase_jwt_secret is None and settings.supabase_url is None
    with pytest.raises(KeySourceMissing) as info:
        create_app(settings)
    message = str(info.value)
    assert "production" in message
    assert "SUPABASE_JWT_SECRET" in message and "SUPABASE_URL" in message
    assert not (tmp_path / "data" / "jwt-secret").exists()


@pytest.mark.usefixtures("clean_env")
def test_production_with_a_key_source_starts(tmp_path: Path) -> None:
    create_app(Settings(ENVIRONMENT="production", SUPABASE_JWT_SECRET="k" * 40))
    create_app(Settings(ENVIRONMENT="production", SUPABASE_URL="http://127.0.0.1:9"))
    assert not (tmp_path / "data").exists()


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize("secret", ["changeme", "super-secret", "CHANGEME", "short-but-real-ish"])
def test_placeholder_secret_refused_in_production(secret: str) -> None:
    with pytest.raises(ValidationError, match="SUPABASE_JWT_SECRET"):
        Settings(ENVIRONMENT="production", SUPABASE_JWT_SECRET=secret)
    # Development accepts it: it is a developer's own machine.
    assert Settings(ENVIRONMENT="development", SUPABASE_JWT_SECRET=secret).supabase_jwt_secret


async def test_development_generates_and_reuses_a_secret(tmp_path: Path, redis_url: str) -> None:
    settings = make_settings(tmp_path, redis_url, supabase_jwt_secret=None)
    path = settings.data_dir / "jwt-secret"
    assert not path.exists()
    async with running_app(settings) as (_, client):
        assert path.exists()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        secret = path.read_text().strip()
        assert len(secret) >= 32 and secret != TEST_SECRET
        resp = await client.get(ME, headers=bearer(mint_token(secret, user_id="dev")))
        assert resp.status_code == 200, resp.text
        assert_error(await client.get(ME, headers=auth("dev")), 401, "unauthorized")
    again = make_settings(tmp_path, redis_url, supabase_jwt_secret=None)
    async with running_app(again) as (_, client):
        assert path.read_text().strip() == secret
        resp = await client.get(ME, headers=bearer(mint_token(secret, user_id="dev")))
        assert resp.status_code == 200, resp.text


def _first_starts(data: Path, count: int) -> tuple[list[str], list[BaseException]]:
    """`count` threads released together, each loading or creating the secret."""
    barrier = threading.Barrier(count)
    results: list[str] = []
    errors: list[BaseException] = []

    def start() -> None:
        barrier.wait()
        try:
            results.append(load_or_create_dev_secret(data))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    return results, errors


def test_concurrent_first_starts_agree_on_one_secret(tmp_path: Path) -> None:
    # Workers, `healthcomp token` and a second service may all start on a fresh data dir.
    for round_ in range(5):
        data = tmp_path / f"data-{round_}"
        results, errors = _first_starts(data, 8)
        assert errors == []
        stored = (data / "jwt-secret").read_text().strip()
        assert results == [stored] * 8
        assert stat.S_IMODE((data / "jwt-secret").stat().st_mode) == 0o600
        assert sorted(p.name for p in data.iterdir()) == ["jwt-secret"]


# --- the test settings themselves ----------------------------------------------------------

# Each read by `Settings()` under a different rule: an alias, a lower-cased alias, the second
# of an AliasChoices.
LEAKY_ENV = {
    "HC_RATE_LIMIT_USER": "1",
    "SUPABASE_URL": "https://leak.supabase.co",
    "SUPABASE_JWT_SECRET": "leaked-secret-" + "z" * 40,
    "SUPABASE_ANON_KEY": "leaked-anon-key",
    "ENVIRONMENT": "production",
    "hc_jwt_leeway": "0",
    "HOST": "0.0.0.0",
    "HC_WORKERS": "3",
}
LEAKY_DOTENV = (
    "HC_RATE_LIMIT_IP=1\n"
    "HC_STEP_GOAL=5\n"
    "HC_JWT_ALGORITHMS=RS256\n"
    "REDIS_URL=redis://leak.invalid:6379/0\n"
    "HC_MAX_BODY_BYTES=4096\n"
)


def test_make_settings_ignores_environment_and_dotenv(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    clear_settings_env(monkeypatch)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (cwd / ".env").write_text(LEAKY_DOTENV)
    monkeypatch.chdir(cwd)
    for name, value in LEAKY_ENV.items():
        monkeypatch.setenv(name, value)

    # The control: the class itself does read all of them here, so the test can fail.
    leaky = Settings()
    assert (leaky.rate_limit_user_per_minute, leaky.rate_limit_ip_per_minute) == (1, 1)
    assert leaky.supabase_url == "https://leak.supabase.co" and leaky.is_production
    assert (leaky.jwt_leeway_seconds, leaky.host, leaky.workers) == (0, "0.0.0.0", 3)
    assert (leaky.step_goal, leaky.jwt_algorithms) == (5, ["RS256"])
    assert leaky.redis_url == "redis://leak.invalid:6379/0"

    settings = make_settings(tmp_path, None)
    assert settings.redis_url is None
    assert settings.supabase_url is None
    assert settings.supabase_jwt_secret == TEST_SECRET
    assert settings.environment == "development"
    assert settings.data_dir == tmp_path / "data"
    chosen = {"redis_url", "supabase_url", "supabase_jwt_secret", "environment", "data_dir"}
    chosen.add("key_prefix")  # random per call
    for name, info in Settings.model_fields.items():
        if name not in chosen:
            declared = info.get_default(call_default_factory=True)
            assert getattr(settings, name) == declared, name
    # Overrides still win, and still only they.
    limited = make_settings(tmp_path, None, rate_limit_user_per_minute=7)
    assert (limited.rate_limit_user_per_minute, limited.rate_limit_ip_per_minute) == (7, 6000)


def test_make_settings_refuses_unknown_names(tmp_path: Path) -> None:
    # The env-var spelling is not a field name: it would otherwise be dropped silently.
    with pytest.raises(AssertionError, match="HC_RATE_LIMIT_USER"):
        make_settings(tmp_path, None, HC_RATE_LIMIT_USER=1)


# --- development tokens: `healthcomp token` and the server agree on the secret ----------


def _mint(capsys: pytest.CaptureFixture[str], data: Path, user: str) -> tuple[str, str]:
    """`healthcomp token` with the test's data dir: (the token on stdout, stderr)."""
    from healthcomp import cli

    env = {"SUPABASE_JWT_SECRET": "", "SUPABASE_URL": "", "ENVIRONMENT": "development"}
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        mp.chdir(data.parent)
        assert cli.main(["token", "--data-dir", str(data), "--user", user]) == 0
    out, err = capsys.readouterr()
    return out.strip(), err


async def test_token_command_says_which_secret_and_the_server_names_a_foreign_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    served, elsewhere = tmp_path / "served", tmp_path / "elsewhere"
    settings = make_settings(tmp_path, None, supabase_jwt_secret=None, data_dir=served)
    authenticator = Authenticator(settings)  # the server's first start makes the secret
    token, err = _mint(capsys, served, "ana")
    assert str((served / "jwt-secret").resolve()) in err and "signed with" in err
    assert token.count(".") == 2 and "\n" not in token  # stdout is the token alone
    assert (await authenticator.verify(token)).user_id == "ana"

    foreign, err = _mint(capsys, elsewhere, "ana")
    assert "made one" in err and str(elsewhere.resolve()) in err
    with pytest.raises(Unauthorized) as refused:
        await authenticator.verify(foreign)
    assert "development secret" in refused.value.message
    assert f"--data-dir {served.resolve()}" in refused.value.message
    await authenticator.aclose()


def test_fields_own_names_are_not_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Only the documented names (docs/CONFIGURATION.md): a generic `WORKERS` or
    `DATA_DIR` set for another program is not taken for ours."""
    clear_settings_env(monkeypatch)
    monkeypatch.chdir(tmp_path)
    for name, value in {"WORKERS": "5", "DATA_DIR": "/elsewhere", "SERVER": "granian"}.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert (settings.workers, settings.data_dir, settings.server) == (1, Path("./data"), "uvicorn")
    monkeypatch.setenv("HC_WORKERS", "5")
    assert Settings().workers == 5  # the control: the documented name is read


def test_token_command_refuses_when_the_server_would_not_accept_its_tokens(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With SUPABASE_URL and no secret the server verifies with the project's key set
    only: a development token would be refused, so none is made."""
    from healthcomp import cli

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SUPABASE_JWT_SECRET", "")
        mp.setenv("SUPABASE_URL", "https://example.supabase.co")
        mp.setenv("ENVIRONMENT", "development")
        mp.chdir(tmp_path)
        with pytest.raises(SystemExit) as stopped:
            cli.main(["token", "--data-dir", str(tmp_path / "data"), "--user", "ana"])
    assert "SUPABASE_URL is set" in str(stopped.value.code)
    assert not (tmp_path / "data" / "jwt-secret").exists()
    assert capsys.readouterr().out == ""


async def test_a_token_over_16_kib_is_refused_before_it_is_decoded(
    client: httpx.AsyncClient,
) -> None:
    """SPEC §3: even a correctly signed token is refused when it is this long; the
    refusal names the bound (a forged multi-megabyte token took seconds to decode)."""
    now = int(time.time())
    claims = {"sub": "big", "role": "authenticated", "aud": "authenticated", "exp": now + 600}
    fits = jwt.encode({**claims, "pad": "x" * 12_000}, TEST_SECRET, algorithm="HS256")
    too_long = jwt.encode({**claims, "pad": "x" * 13_000}, TEST_SECRET, algorithm="HS256")
    assert len(fits) <= 16 * 1024 < len(too_long)
    ok = await client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {fits}"})
    assert ok.status_code == 200, ok.text
    for path in ("/api/v1/users/me", "/api/v1/leaderboard/any"):  # framework and lean paths
        resp = await client.get(path, headers={"Authorization": f"Bearer {too_long}"})
        body = assert_error(resp, 401, "unauthorized")
        assert "16 KiB" in body["message"]
