"""Token verification at its edges (core/auth.py), for the survivors of the mutation run
(`python -m tests.mutation --area auth`): what a principal carries, the length bound,
the verified-token memory and its bound, algorithms without their key source, a date
claim too large for a float, and what `mint_token` puts in a token."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jwt
import pytest

from healthcomp.core import auth as auth_module
from healthcomp.core.auth import (
    ANON,
    MAX_TOKEN_LENGTH,
    SERVICE,
    USER,
    Authenticator,
    Principal,
    mint_token,
)
from healthcomp.core.errors import Forbidden, Unauthorized
from tests.conftest import TEST_SECRET, make_settings
from tests.core.test_auth import EC1


def _auth(tmp_path: Path, **overrides: Any) -> Authenticator:
    return Authenticator(make_settings(tmp_path, None, **overrides))


def _token(**claims: Any) -> str:
    now = int(time.time())
    base: dict[str, Any] = {
        "sub": "ana",
        "role": USER,
        "aud": USER,
        "iat": now,
        "exp": now + 600,
    }
    base.update(claims)
    return jwt.encode({k: v for k, v in base.items() if v is not None}, TEST_SECRET, "HS256")


async def test_what_a_principal_carries(tmp_path: Path) -> None:
    a = _auth(tmp_path)
    service = await a.verify(mint_token(TEST_SECRET, user_id=None, role=SERVICE))
    assert (service.role, service.user_id, service.is_service) == (SERVICE, None, True)
    assert service.default_name() == "service"

    user = await a.verify(_token(user_metadata={"full_name": 5, "name": "  Bo  "}, email=7))
    assert (user.role, user.user_id, user.is_service) == (USER, "ana", False)
    assert (user.full_name, user.email) == ("Bo", None)
    long = await a.verify(_token(sub="long", user_metadata={"full_name": "x" * 100}))
    assert long.full_name == "x" * 80 and long.default_name() == "x" * 80
    # The default name from the e-mail: what comes before the first `@`, at most 80.
    assert Principal(USER, "u", email="first@second@host").default_name() == "first"
    assert Principal(USER, "u", email="y" * 90 + "@x.io").default_name() == "y" * 80


def test_a_user_acts_only_as_themself() -> None:
    Principal(USER, "ana").require_self_or_service("ana")
    with pytest.raises(Forbidden):
        Principal(USER, "ana").require_self_or_service("bob")
    Principal(SERVICE, None).require_self_or_service("bob")


async def test_the_length_bound_is_over_16_kib_not_at_it(tmp_path: Path) -> None:
    a = _auth(tmp_path)
    with pytest.raises(Unauthorized) as at_bound:
        await a.verify("a" * MAX_TOKEN_LENGTH)
    assert "longer than" not in at_bound.value.message  # refused as malformed instead
    with pytest.raises(Unauthorized) as over:
        await a.verify("a" * (MAX_TOKEN_LENGTH + 1))
    assert "longer than" in over.value.message


async def test_verified_tokens_are_remembered_within_a_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = _auth(tmp_path)
    calls: list[str] = []
    verify = a._verify

    async def counted(token: str) -> Any:
        calls.append(token)
        return await verify(token)

    monkeypatch.setattr(a, "_verify", counted)
    monkeypatch.setattr(auth_module, "TOKEN_CACHE_SIZE", 3)
    first = _token()
    for _ in range(3):
        assert (await a.verify(first)).user_id == "ana"
    assert calls == [first]
    for i in range(5):
        await a.verify(_token(sub=f"u{i}"))
    assert len(a._verified) == 3


async def test_an_algorithm_without_its_key_source_is_refused(tmp_path: Path) -> None:
    # ES256 allowed, but no key set configured: an ES256 token is refused as such.
    hs_only = _auth(tmp_path, jwt_algorithms=["HS256", "ES256"])
    assert hs_only.jwks is None
    with pytest.raises(Unauthorized) as es:
        await hs_only.verify(EC1.sign({"sub": "ana", "role": USER, "aud": USER}))
    assert es.value.message == "The token's signing algorithm is not accepted."
    # HS256 allowed, but a key set and no secret: an HS256 token is refused as such.
    jwks_only = _auth(
        tmp_path,
        jwt_algorithms=["HS256", "ES256"],
        supabase_jwt_secret=None,
        jwks_url="http://127.0.0.1:9/jwks.json",
    )
    with pytest.raises(Unauthorized) as hs:
        await jwks_only.verify(_token())
    assert hs.value.message == "The token's signing algorithm is not accepted."
    await jwks_only.aclose()


async def test_a_date_beyond_any_float_is_no_date(tmp_path: Path) -> None:
    with pytest.raises(Unauthorized, match="'exp' claim is not a number"):
        await _auth(tmp_path).verify(_token(exp=10**400))


def test_what_mint_token_puts_in_a_token() -> None:
    user = mint_token(
        TEST_SECRET, user_id="ana", email="a@x.io", name="Ana", issuer="https://p/auth/v1"
    )
    assert jwt.get_unverified_header(user)["alg"] == "HS256"
    claims = jwt.decode(user, TEST_SECRET, algorithms=["HS256"], audience=USER)
    assert claims["aud"] == USER and claims["iss"] == "https://p/auth/v1"
    assert claims["exp"] - claims["iat"] == 7 * 24 * 3600
    anon = jwt.decode(
        mint_token(TEST_SECRET, user_id=None, role=ANON),
        TEST_SECRET,
        algorithms=["HS256"],
        audience=ANON,
    )
    assert anon["aud"] == ANON and "sub" not in anon and "iss" not in anon


async def test_a_refused_development_token_names_the_secret_to_mint_with(
    tmp_path: Path,
) -> None:
    a = _auth(tmp_path, supabase_jwt_secret=None)
    assert a.dev_secret_path == (tmp_path / "data" / "jwt-secret").resolve()
    with pytest.raises(Unauthorized) as refused:
        await a.verify(_token())  # signed with the test secret, not the generated one
    assert str(a.dev_secret_path) in refused.value.message


def test_acting_for_someone_else_says_why() -> None:
    with pytest.raises(Forbidden, match="only act on your own account"):
        Principal(USER, "ana").require_self_or_service("bob")
