"""The JWKS key set (core/auth.py), for the cases the mutation run (`python -m
tests.mutation --area auth`) found untested: keys published without `alg`, entries that
are not keys, a key withdrawn from the set, a fetch that never answers, closing."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from healthcomp.core.auth import JWKSCache
from healthcomp.core.errors import ServiceUnavailable
from tests.conftest import assert_error
from tests.core.support import running_app
from tests.core.test_auth import (
    EC1,
    ME,
    PATH,
    RS1,
    JWKSServer,
    bearer,
    ec_key,
    jwks_server,
    jwks_settings,
    publish,
    user_claims,
)

__all__ = ["jwks_server"]  # the fixture, used by name


async def test_keys_without_alg_are_taken_by_their_kty(
    tmp_path: Path, redis_url: str, jwks_server: JWKSServer
) -> None:
    # An entry that is not an object comes first: skipped, not the end of the list.
    ec_jwk = {k: v for k, v in EC1.jwk().items() if k != "alg"}
    rs_jwk = {k: v for k, v in RS1.jwk().items() if k != "alg"}
    jwks_server.documents[PATH] = {"keys": ["not a key", 7, ec_jwk, rs_jwk]}
    async with running_app(jwks_settings(tmp_path, redis_url, jwks_server)) as (_, client):
        for key, user in ((EC1, "ec-user"), (RS1, "rs-user")):
            resp = await client.get(ME, headers=bearer(key.sign(user_claims(user))))
            assert resp.status_code == 200, resp.text
            assert resp.json()["data"]["user_id"] == user


async def test_a_withdrawn_key_stops_working_once_the_set_is_fetched_again(
    tmp_path: Path, redis_url: str, jwks_server: JWKSServer
) -> None:
    # A token verified (and remembered) with a key that the next fetch no longer lists is
    # verified again, and refused, even though its own expiry is an hour away.
    publish(jwks_server, EC1)
    settings = jwks_settings(tmp_path, redis_url, jwks_server, jwks_cache_seconds=600)
    async with running_app(settings) as (_, client):
        token = EC1.sign(user_claims("kept"))
        assert (await client.get(ME, headers=bearer(token))).status_code == 200
        assert (await client.get(ME, headers=bearer(token))).status_code == 200
        assert jwks_server.total() == 1
        publish(jwks_server, RS1)  # EC1 withdrawn
        other = ec_key("ec-other")
        resp = await client.get(ME, headers=bearer(other.sign(user_claims())))
        assert_error(resp, 401, "unauthorized")  # an unknown kid: the set is fetched again
        assert jwks_server.total() == 2
        assert_error(await client.get(ME, headers=bearer(token)), 401, "unauthorized")


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that takes connections and never answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    try:
        yield int(sock.getsockname()[1])
    finally:
        sock.close()


async def test_a_key_set_that_never_answers_times_out(silent_port: int) -> None:
    cache = JWKSCache(f"http://127.0.0.1:{silent_port}{PATH}", 60, 0, timeout=0.3)
    try:
        with pytest.raises(ServiceUnavailable):
            await asyncio.wait_for(cache.get("any"), 10)
        assert cache.fetches == 1
    finally:
        await cache.aclose()


async def test_closing_the_key_set_closes_its_client(jwks_server: JWKSServer) -> None:
    publish(jwks_server, EC1)
    cache = JWKSCache(f"{jwks_server.base}{PATH}", 60, 0)
    assert (await cache.get(EC1.kid)) is not None
    assert cache._client is not None
    await cache.aclose()
    assert cache._client is None
    await cache.aclose()  # twice: nothing to close


async def test_only_signing_keys_are_taken_and_use_may_be_left_out(
    tmp_path: Path, redis_url: str, jwks_server: JWKSServer
) -> None:
    # An encryption key (`use: enc`) and a key of an algorithm not accepted come first:
    # skipped, and the list goes on. A key that leaves `use` out is a signing key.
    enc = ec_key("ec-enc")
    odd = {**ec_key("ec-odd").jwk(), "alg": "ES512"}
    plain = {k: v for k, v in EC1.jwk().items() if k != "use"}
    jwks_server.documents[PATH] = {"keys": [{**enc.jwk(), "use": "enc"}, odd, plain]}
    async with running_app(jwks_settings(tmp_path, redis_url, jwks_server)) as (_, client):
        resp = await client.get(ME, headers=bearer(EC1.sign(user_claims("plain"))))
        assert resp.status_code == 200, resp.text
        resp = await client.get(ME, headers=bearer(enc.sign(user_claims("enc"))))
        assert_error(resp, 401, "unauthorized")
