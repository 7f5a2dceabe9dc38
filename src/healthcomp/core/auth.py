"""Verifying Supabase JWTs, and the typed dependencies routes declare.

Supabase signs with a shared HS256 secret (legacy projects) or with asymmetric keys
(ES256, RS256) published as a JWKS. Only the algorithms configured are accepted;
the algorithm of a token picks the key *type* (secret for HS*, JWKS key of the
matching kty for ES/RS), so a public key can never be used as an HMAC secret.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jwt
from jwt import PyJWK

from healthcomp.core.errors import Forbidden, ServiceUnavailable, Unauthorized
from healthcomp.core.inputs import without_unseen
from healthcomp.core.keys import valid_id
from healthcomp.core.logs import note_user
from healthcomp.core.settings import Settings

if TYPE_CHECKING:  # imported when a JWKS is configured: ~6 MB a worker saved otherwise
    import httpx

log = logging.getLogger("healthcomp.auth")

USER = "authenticated"
SERVICE = "service_role"
ANON = "anon"

_KTY_FOR_ALG = {"ES256": "EC", "RS256": "RSA"}
_TIME_CLAIMS = ("exp", "nbf", "iat")


def _is_numeric_date(value: object) -> bool:
    # bool is an int subclass; `true` is no date.
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer beyond any float (a 400-digit `exp`): no date
        return False


@dataclass(frozen=True)
class Principal:
    """Who is calling: a signed-in user, or a trusted server (`service_role`)."""

    role: str
    user_id: str | None
    email: str | None = None
    full_name: str | None = None
    claims: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def is_service(self) -> bool:
        return self.role == SERVICE

    def require_self_or_service(self, user_id: str) -> None:
        """A user acts only as themself (SPEC §3)."""
        if not self.is_service and user_id != self.user_id:
            raise Forbidden("You can only act on your own account.")

    def default_name(self) -> str:
        """The name a user gets until they set one: from the token's metadata or email,
        without the control and bidirectional-override characters a name refuses, at
        most 80 characters (as a display name)."""
        for candidate in (
            self.full_name,
            self.email.split("@", 1)[0] if self.email and "@" in self.email else None,
        ):
            if candidate:
                cleaned = " ".join(without_unseen(candidate).split())[:80].strip()
                if cleaned:
                    return cleaned
        return self.user_id or "service"


class JWKSCache:
    """The JWKS, fetched with an async client, cached for at most `ttl` seconds.

    An unknown `kid` triggers a refetch, but at most once per `min_refetch` seconds,
    so a flood of tokens with made-up kids cannot turn into a flood of fetches. The
    same bound holds while the set cannot be fetched and no keys are held: after a
    failed fetch, tokens are answered 503 without another attempt until `min_refetch`
    has passed (before, each forged token made its own outbound fetch).
    """

    def __init__(self, url: str, ttl: float, min_refetch: float, timeout: float = 3.0) -> None:
        self.url = url
        self.ttl = ttl
        self.min_refetch = min_refetch
        self.timeout = timeout
        self.fetches = 0
        self._keys: dict[str, PyJWK] = {}
        self._fetched_at = float("-inf")
        self._attempted_at = float("-inf")
        self._failed_at = float("-inf")  # the last fetch that failed
        self._lock = asyncio.Lock()
        self._client: httpx.AsyncClient | None = None

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _fresh(self) -> bool:
        return time.monotonic() - self._fetched_at < self.ttl

    def expires_in(self) -> float:
        """Seconds until the keys held now are too old to trust."""
        return self._fetched_at + self.ttl - time.monotonic()

    async def _refresh(self) -> None:
        self._attempted_at = time.monotonic()
        self.fetches += 1
        if self._client is None:
            import httpx

            self._client = httpx.AsyncClient(timeout=self.timeout)
        resp = await self._client.get(self.url, headers={"Accept": "application/json"})
        resp.raise_for_status()
        document = resp.json()
        raw_keys = document.get("keys") if isinstance(document, dict) else None
        if not isinstance(raw_keys, list):
            raise ValueError("the JWKS document has no list of keys")
        keys: dict[str, PyJWK] = {}
        for raw in raw_keys:
            if not isinstance(raw, dict):
                continue
            alg = raw.get("alg") or {"EC": "ES256", "RSA": "RS256"}.get(raw.get("kty", ""))
            if alg not in _KTY_FOR_ALG or raw.get("use", "sig") != "sig":
                continue
            try:
                keys[str(raw.get("kid", ""))] = PyJWK.from_dict(raw, algorithm=alg)
            except jwt.PyJWTError:
                log.warning("skipping an unusable JWKS key %s", raw.get("kid"))
        self._keys = keys
        self._fetched_at = time.monotonic()

    async def get(self, kid: str) -> PyJWK | None:
        if self._fresh() and kid in self._keys:
            return self._keys[kid]
        async with self._lock:
            if self._fresh() and kid in self._keys:
                return self._keys[kid]
            stale = not self._fresh()
            now = time.monotonic()
            may_refetch = now - self._attempted_at >= self.min_refetch
            if stale and not may_refetch and self._failed_at == self._attempted_at:
                raise _keyset_unavailable()  # failed just now: not again before the bound
            if stale or may_refetch:
                from httpx import HTTPError  # lazily, like the client: only with a JWKS

                try:
                    await self._refresh()
                except (HTTPError, ValueError) as exc:
                    self._failed_at = self._attempted_at
                    log.warning("JWKS fetch from %s failed: %s", self.url, exc)
                    # Keys older than the TTL are not trusted any more.
                    if not self._fresh():
                        self._keys = {}
                        raise _keyset_unavailable() from exc
            return self._keys.get(kid)


def _keyset_unavailable() -> ServiceUnavailable:
    return ServiceUnavailable("The sign-in key set cannot be fetched right now; try again shortly.")


def load_or_create_dev_secret(data_dir: Path) -> str:
    """A random HS256 secret kept in the data directory, for development only.

    The file is 0600 from its first byte, and it is published with a hard link, which
    fails when another process (a worker, `healthcomp token`) got there first: all of
    them then use the one secret that won.
    """
    path = data_dir / "jwt-secret"
    try:
        secret = path.read_text().strip()
        if secret:
            return secret
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    tmp = data_dir / f".jwt-secret.{os.getpid()}.{secrets.token_hex(8)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_urlsafe(48))
    try:
        os.link(tmp, path)
    except FileExistsError:
        if not path.read_text().strip():  # an empty file left by someone: replace it
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path.read_text().strip()


_warned: set[str] = set()


def _warn_once(message: str, *args: object) -> None:
    """Several Authenticators per process (CLI check, demo, app) say it once."""
    text = message % args
    if text not in _warned:
        _warned.add(text)
        log.warning(text)


class KeySourceMissing(RuntimeError):
    pass


# Verified tokens kept per worker (SPEC: cached until expiry, bounded, keyed by the
# token). A longer token is verified every time rather than held.
TOKEN_CACHE_SIZE = 4096
TOKEN_CACHE_MAX_LENGTH = 4096
# SPEC §3: a longer token is refused before anything of it is decoded (a real Supabase
# access token is about a kilobyte; a forged one of megabytes cost seconds to decode).
MAX_TOKEN_LENGTH = 16 * 1024


class Authenticator:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # token -> (principal, wall-clock second until which it stays valid, the key
        # set's fetch count when it was verified with a JWKS key, else None)
        self._verified: dict[str, tuple[Principal, float, int | None]] = {}
        self.algorithms = list(settings.jwt_algorithms)
        self.secret: str | None = settings.supabase_jwt_secret
        # Where the generated development secret is, when it is the key (for the hint
        # a refused development token gets).
        self.dev_secret_path: Path | None = None
        jwks_url = settings.effective_jwks_url
        self.jwks: JWKSCache | None = None
        if jwks_url and any(a in _KTY_FOR_ALG for a in self.algorithms):
            self.jwks = JWKSCache(
                jwks_url, settings.jwks_cache_seconds, settings.jwks_min_refetch_seconds
            )
        if self.secret is None and self.jwks is None:
            if settings.is_production:
                raise KeySourceMissing(
                    "no key source to verify tokens: set SUPABASE_JWT_SECRET (HS256) or "
                    "SUPABASE_URL (for the JWKS of ES256/RS256 keys); refusing to start in "
                    "production without one"
                )
            self.secret = load_or_create_dev_secret(settings.data_dir)
            self.dev_secret_path = (settings.data_dir / "jwt-secret").resolve()
            _warn_once(
                "no SUPABASE_JWT_SECRET: using a generated development secret in %s/jwt-secret",
                settings.data_dir,
            )

    async def aclose(self) -> None:
        if self.jwks is not None:
            await self.jwks.aclose()

    async def _key_for(self, token: str) -> tuple[Any, str]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthorized("The token is malformed.") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise Unauthorized("The token's signing algorithm is not accepted.")
        if alg.startswith("HS"):
            if not self.secret:
                raise Unauthorized("The token's signing algorithm is not accepted.")
            return self.secret, alg
        if self.jwks is None:
            raise Unauthorized("The token's signing algorithm is not accepted.")
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise Unauthorized("The token has no key id.")
        key = await self.jwks.get(kid)
        if key is None or key.key_type != _KTY_FOR_ALG[alg]:
            raise Unauthorized("The token was signed with an unknown key.")
        return key.key, alg

    async def verify(self, token: str) -> Principal:
        """The token's principal. A token verified before is answered from memory until
        its `exp` (plus the leeway): its signature and claims cannot change meanwhile.
        A token checked with a key of the JWKS is verified again once the key set it
        was checked against is refetched or too old, so a key withdrawn from the set
        stops working exactly when it would without this cache."""
        if len(token) > MAX_TOKEN_LENGTH:
            raise Unauthorized(f"The token is longer than {MAX_TOKEN_LENGTH // 1024} KiB.")
        hit = self._verified.get(token)
        if hit is not None:
            principal, until, keyset = hit
            if time.time() < until and (keyset is None or keyset == self._keyset()):
                note_user(principal.user_id or principal.role)
                return principal
            del self._verified[token]
        principal, by_jwks = await self._verify(token)
        note_user(principal.user_id or principal.role)
        if len(token) <= TOKEN_CACHE_MAX_LENGTH:
            if len(self._verified) >= TOKEN_CACHE_SIZE:
                # Forget the oldest (dicts keep insertion order).
                del self._verified[next(iter(self._verified))]
            until = float(principal.claims["exp"]) + self.settings.jwt_leeway_seconds
            keyset = None
            if by_jwks and self.jwks is not None:
                until = min(until, time.time() + self.jwks.expires_in())
                keyset = self._keyset()
            self._verified[token] = (principal, until, keyset)
        return principal

    def _keyset(self) -> int:
        return self.jwks.fetches if self.jwks is not None else 0

    async def _verify(self, token: str) -> tuple[Principal, bool]:
        """The principal, and whether a key of the JWKS verified it."""
        key, alg = await self._key_for(token)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key,
                algorithms=[alg],
                leeway=self.settings.jwt_leeway_seconds,
                options={"require": ["exp"], "verify_aud": False, "verify_iss": False},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("The token has expired.") from None
        except jwt.ImmatureSignatureError:
            raise Unauthorized("The token is not valid yet.") from None
        except jwt.InvalidSignatureError:
            if self.dev_secret_path is not None and alg.startswith("HS"):
                raise Unauthorized(
                    "The token's signature does not match this server's development secret "
                    f"({self.dev_secret_path}): mint tokens with `healthcomp token "
                    f"--data-dir {self.dev_secret_path.parent}`."
                ) from None
            raise Unauthorized("The token's signature or claims are invalid.") from None
        except jwt.PyJWTError:
            raise Unauthorized("The token's signature or claims are invalid.") from None
        # PyJWT compares int(claim), so a string "9999999999" would pass as a date
        # forever in the future; RFC 7519 NumericDate is a JSON number.
        for name in _TIME_CLAIMS:
            if name in claims and not _is_numeric_date(claims[name]):
                raise Unauthorized(f"The token's '{name}' claim is not a number.")
        return self._principal(claims), not alg.startswith("HS")

    def _principal(self, claims: dict[str, Any]) -> Principal:
        role = claims.get("role")
        if role == SERVICE:
            return Principal(role=SERVICE, user_id=None, claims=claims)
        if role == ANON:
            raise Unauthorized("The anon key cannot call this API; sign in first.")
        if role != USER:
            raise Unauthorized("The token carries no usable role.")
        sub = claims.get("sub")
        if not isinstance(sub, str) or not valid_id(sub):
            raise Unauthorized("The token has no valid subject.")
        aud = claims.get("aud")
        auds = aud if isinstance(aud, list) else [aud]
        if USER not in auds:
            raise Unauthorized("The token's audience is not 'authenticated'.")
        issuer = self.settings.expected_issuer
        if issuer is not None and claims.get("iss") != issuer:
            raise Unauthorized("The token was issued for another project.")
        meta = claims.get("user_metadata")
        name = None
        if isinstance(meta, dict):
            for field_name in ("full_name", "name"):
                value = meta.get(field_name)
                if isinstance(value, str) and value.strip():
                    name = value.strip()[:80]
                    break
        email = claims.get("email")
        return Principal(
            role=USER,
            user_id=sub,
            email=email if isinstance(email, str) else None,
            full_name=name,
            claims=claims,
        )


def mint_token(
    secret: str,
    *,
    user_id: str | None,
    role: str = USER,
    name: str | None = None,
    email: str | None = None,
    ttl_seconds: int = 7 * 24 * 3600,
    issuer: str | None = None,
) -> str:
    """An HS256 token shaped like Supabase's, for development and tests."""
    now = int(time.time())
    claims: dict[str, Any] = {"role": role, "iat": now, "exp": now + ttl_seconds}
    if role != SERVICE:
        claims["aud"] = USER if role == USER else role
        if user_id is not None:
            claims["sub"] = user_id
        if issuer:
            claims["iss"] = issuer
        if email:
            claims["email"] = email
        if name:
            claims["user_metadata"] = {"full_name": name}
    return jwt.encode(claims, secret, algorithm="HS256")
