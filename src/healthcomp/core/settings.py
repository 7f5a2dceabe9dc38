"""All configuration, from the environment and an optional `.env` file.

The variable names of the original deployment (`PORT`, `REDIS_URL`, `SUPABASE_*`,
`ENVIRONMENT`, `LOG_LEVEL`) are kept as they were; everything this service adds is
prefixed `HC_` so it cannot collide with another program's settings.

Every field carries a `description`: `reference_markdown()` renders the reference table
of docs/CONFIGURATION.md from them (printed by `python -m healthcomp.core.settings`,
checked by a test).
"""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import annotated_types
from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

_PLACEHOLDERS = {"changeme", "change-me", "secret", "your-jwt-secret", "super-secret", ""}
JWT_ALGORITHMS = ("HS256", "HS384", "HS512", "ES256", "RS256")
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


class Settings(BaseSettings):
    # Read only under the names documented (the aliases): not under the fields' own
    # names too, so a generic `WORKERS` or `DATA_DIR` another program left in the
    # environment is not taken for ours. Code that builds a Settings by field name uses
    # `model_copy(update=...)` (cli.py) or `model_construct` (tests).
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    # --- the original names ---
    port: int = Field(
        8082,
        ge=1,
        le=65535,
        validation_alias="PORT",
        description="TCP port the HTTP server listens on.",
    )
    redis_url: str | None = Field(
        None,
        validation_alias="REDIS_URL",
        description="An external Redis or Redis Cluster to use (a cluster may list several "
        "seeds: `redis+cluster://h1:p1,h2:p2`); unset (or empty) starts the embedded Redis "
        "in the data directory.",
    )
    supabase_url: str | None = Field(
        None,
        validation_alias="SUPABASE_URL",
        description="The Supabase project's URL: ES256 and RS256 tokens are verified with "
        "its JWKS, and a user token's `iss` must be `{SUPABASE_URL}/auth/v1`.",
    )
    supabase_jwt_secret: str | None = Field(
        None,
        validation_alias="SUPABASE_JWT_SECRET",
        description="The Supabase project's JWT secret: it verifies HS256 tokens (legacy "
        "projects) and signs the ones `healthcomp token` mints.",
    )
    supabase_anon_key: str | None = Field(
        None,
        validation_alias="SUPABASE_ANON_KEY",
        description="Accepted for compatibility with the original deployment, and unused.",
    )
    environment: Literal["development", "production"] = Field(
        "development",
        validation_alias="ENVIRONMENT",
        description="`production` logs JSON lines and refuses to start without a key "
        "source or with a placeholder secret; `development` logs readable lines and "
        "generates a development secret when no key source is configured.",
    )
    log_level: str = Field(
        "info",
        validation_alias="LOG_LEVEL",
        description="The least severe level of log records written (in any case).",
    )

    # --- this service's own ---
    host: str = Field(
        "127.0.0.1",
        validation_alias=AliasChoices("HC_HOST", "HOST"),
        description="Address the HTTP server binds to; `0.0.0.0` serves beyond this host.",
    )
    workers: int = Field(
        1,
        ge=1,
        le=64,
        validation_alias="HC_WORKERS",
        description="Worker processes `healthcomp serve` starts, all on one Redis.",
    )
    server: Literal["granian", "uvicorn"] = Field(
        "uvicorn",
        validation_alias="HC_SERVER",
        description="The HTTP server `healthcomp serve` runs (docs/BENCHMARKS.md compares them).",
    )
    data_dir: Path = Field(
        Path("./data"),
        validation_alias="HC_DATA_DIR",
        description="Directory of the embedded Redis's files (`redis/`) and of the "
        "generated development secret (`jwt-secret`); a relative path is taken from the "
        "working directory.",
    )
    # `always`: a write is in the file and on the disk before it is acknowledged. With
    # `everysec` Redis holds writes back (still answering them) while a slow fsync runs,
    # and a kill then loses them (tests/faults). See docs/ARCHITECTURE.md.
    embedded_fsync: Literal["always", "everysec"] = Field(
        "always",
        validation_alias="HC_EMBEDDED_FSYNC",
        description="The embedded Redis's AOF fsync policy: with `always` an acknowledged "
        "write is on disk and survives a crash of Redis, of the service or of the OS; "
        "`everysec` fsyncs once a second, and a crash of Redis while a slow fsync runs, "
        "or of the OS, can lose the writes of the last seconds.",
    )
    key_prefix: str = Field(
        "hc",
        pattern=r"^[A-Za-z0-9_.-]{1,32}$",
        validation_alias="HC_KEY_PREFIX",
        description="Prefix of every Redis key, so that several deployments can share one Redis.",
    )
    # Comma-separated in the environment: NoDecode keeps pydantic-settings from parsing
    # it as JSON first.
    jwt_algorithms: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["HS256", "ES256", "RS256"],
        validation_alias="HC_JWT_ALGORITHMS",
        description="JWT signing algorithms accepted, comma-separated; ES256 and RS256 "
        "need a JWKS (`SUPABASE_URL` or `HC_JWKS_URL`), the HS ones a secret.",
    )
    jwt_leeway_seconds: int = Field(
        30,
        ge=0,
        le=300,
        validation_alias="HC_JWT_LEEWAY",
        description="Clock skew allowed on a token's `exp` and `nbf`, in seconds.",
    )
    jwks_url: str | None = Field(
        None,
        validation_alias="HC_JWKS_URL",
        description="Where to fetch the JWKS, instead of "
        "`{SUPABASE_URL}/auth/v1/.well-known/jwks.json`.",
    )
    jwks_cache_seconds: int = Field(
        600,
        ge=10,
        le=600,
        validation_alias="HC_JWKS_CACHE_SECONDS",
        description="How long a fetched JWKS is used before it is fetched again, in seconds.",
    )
    jwks_min_refetch_seconds: float = Field(
        10.0,
        ge=0,
        le=600,
        validation_alias="HC_JWKS_MIN_REFETCH_SECONDS",
        description="Least time between two JWKS fetches caused by a token with an "
        "unknown `kid`, in seconds.",
    )
    max_body_bytes: int = Field(
        1024 * 1024,
        ge=1024,
        validation_alias="HC_MAX_BODY_BYTES",
        description="Largest request body accepted, in bytes; a larger one is answered 413.",
    )
    max_header_bytes: int = Field(
        32 * 1024,
        ge=18 * 1024,
        le=1024 * 1024,
        validation_alias="HC_MAX_HEADER_BYTES",
        description="Largest request head (request line and headers) the server reads, in "
        "bytes; a larger one is answered 431 and the connection closed, before any of it "
        "is parsed into the request. At least 18 KiB, so a 16 KiB token still fits.",
    )
    header_timeout_seconds: float = Field(
        15.0,
        gt=0,
        le=300,
        validation_alias="HC_HEADER_TIMEOUT",
        description="Time a client may take to send a request's head, from connecting or "
        "from the request's first byte, in seconds; a slower one is disconnected.",
    )
    keep_alive_seconds: int = Field(
        5,
        ge=1,
        le=3600,
        validation_alias="HC_KEEP_ALIVE",
        description="Time an idle keep-alive connection is kept open between requests, "
        "in seconds. Behind a load balancer, set it above the balancer's idle timeout. "
        "Under granian the idle limit is `HC_HEADER_TIMEOUT` (one timer for both).",
    )
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        validation_alias="HC_TRUSTED_PROXIES",
        description="Addresses or networks (comma-separated, e.g. `10.0.0.0/8,127.0.0.1`) "
        "of the proxies whose `X-Forwarded-For` gives the client's address for the per-IP "
        "rate limit; from any other peer the header is ignored. Empty: none is trusted.",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        validation_alias="HC_CORS_ORIGINS",
        description="Browser origins allowed to call the API from another site "
        "(comma-separated, e.g. `https://app.example.com`; `*` for any). Empty: no "
        "cross-origin access (CORS headers are never sent).",
    )
    request_timeout_seconds: float = Field(
        10.0,
        gt=0,
        le=300,
        validation_alias="HC_REQUEST_TIMEOUT",
        description="Time a request may take before it is answered 503 (a hung Redis), in seconds.",
    )
    redis_timeout_seconds: float = Field(
        2.0,
        gt=0,
        le=60,
        validation_alias="HC_REDIS_TIMEOUT",
        description="Timeout of connecting to Redis, of each command's reply and of "
        "waiting for a pooled connection, in seconds.",
    )
    redis_max_connections: int = Field(
        64,
        ge=2,
        le=10000,
        validation_alias="HC_REDIS_MAX_CONNECTIONS",
        description="Redis connections each process keeps at most (per node in a cluster).",
    )
    rate_limit_user_per_minute: int = Field(
        300,
        ge=0,
        validation_alias="HC_RATE_LIMIT_USER",
        description="Requests per minute one user may sustain (5 a second), counted across "
        "every process; `0` turns the limit off.",
    )
    rate_limit_user_burst: int = Field(
        100,
        ge=1,
        validation_alias="HC_RATE_LIMIT_USER_BURST",
        description="Requests one user may make at once before the per-minute rate applies "
        "(at most `HC_RATE_LIMIT_USER`): an app opening with a flurry of calls fits, a "
        "client firing hundreds a second meets 429.",
    )
    rate_limit_ip_per_minute: int = Field(
        6000,
        ge=0,
        validation_alias="HC_RATE_LIMIT_IP",
        description="Requests per minute from one client address that carry no valid "
        "token; `0` turns the limit off.",
    )
    # How often each process sends its users' spending to Redis and reads back the
    # shared state (core/ratelimit.py): the bound on how far processes can disagree.
    rate_limit_sync_ms: int = Field(
        50,
        ge=5,
        le=10_000,
        validation_alias="HC_RATE_LIMIT_SYNC_MS",
        description="How often each process reconciles its users' rate-limit spending "
        "with Redis, in milliseconds.",
    )
    step_goal: int = Field(
        10_000,
        ge=1,
        le=100_000,
        validation_alias="HC_STEP_GOAL",
        description="Daily step goal that streaks count against when a request names none.",
    )
    # --- the live leaderboards (WebSocket, healthcomp.live) ---
    ws_update_interval_ms: int = Field(
        250,
        ge=10,
        le=60_000,
        validation_alias="HC_WS_UPDATE_INTERVAL_MS",
        description="Least time between two `leaderboard_update` frames of one "
        "competition, in milliseconds.",
    )
    ws_heartbeat_seconds: float = Field(
        25.0,
        ge=0.5,
        le=3600,
        validation_alias="HC_WS_HEARTBEAT_SECONDS",
        description="Period of the heartbeat frame to every WebSocket client and of the "
        "protocol pings that drop a dead peer, in seconds.",
    )
    ws_max_lag: int = Field(
        256,
        ge=1,
        le=100_000,
        validation_alias="HC_WS_MAX_LAG",
        description="Events a WebSocket client may fall behind before it gets a fresh "
        "snapshot instead.",
    )
    ws_send_timeout_seconds: float = Field(
        10.0,
        ge=0.5,
        le=600,
        validation_alias="HC_WS_SEND_TIMEOUT_SECONDS",
        description="Time a client's socket may take no frame before it is closed with "
        "1013, in seconds.",
    )
    ws_max_connections: int = Field(
        20_000,
        ge=1,
        le=1_000_000,
        validation_alias="HC_WS_MAX_CONNECTIONS",
        description="WebSocket connections one process holds; the next ones are closed "
        "with 1013 (try again).",
    )
    demo_on_start: bool = Field(
        False,
        validation_alias="HC_DEMO",
        description="Seed the demo competition when `healthcomp serve` starts, as `--demo` does.",
    )
    metrics: Literal["public", "protected", "off"] | None = Field(
        None,
        validation_alias="HC_METRICS",
        description="`/metrics`: `public` (no token), `protected` (a service-role token, or "
        "`HC_METRICS_TOKEN`, as a bearer) or `off` (404); unset, public "
        "in development and protected in production.",
    )
    metrics_token: str | None = Field(
        None,
        validation_alias="HC_METRICS_TOKEN",
        description="A bearer token for a Prometheus scraper when `/metrics` is protected "
        "(compared in constant time); 16 characters or more.",
        min_length=16,
    )
    max_open_competitions: int = Field(
        20,
        ge=0,
        le=10_000,
        validation_alias="HC_MAX_OPEN_COMPETITIONS",
        description="Competitions one user may organize that are not over; `0` means no cap.",
    )
    sweep_seconds: float = Field(
        30.0,
        ge=0.5,
        le=3600,
        validation_alias="HC_SWEEP_SECONDS",
        description="How often one process finishes the work a dead request left owed "
        "(recounts, syncs, back-fills), in seconds.",
    )
    recount_inline_seconds: float = Field(
        2.0,
        ge=0,
        le=60,
        validation_alias="HC_RECOUNT_INLINE_SECONDS",
        description="How long a rule edit waits for its recount before answering, in "
        "seconds; the rest runs in the background.",
    )
    recount_chunk: int = Field(
        100,
        ge=1,
        le=10_000,
        validation_alias="HC_RECOUNT_CHUNK",
        description="Participants a recount job counts between two saves of its progress.",
    )

    @field_validator("jwt_algorithms", mode="before")
    @classmethod
    def _split_algorithms(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("trusted_proxies", "cors_origins", mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(
                    f"{entry!r} is not an IP address or network (e.g. 10.0.0.0/8)"
                ) from None
        return value

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if origin != "*" and not re.fullmatch(r"https?://[^/\s?#]+", origin):
                raise ValueError(
                    f"{origin!r} is not an origin: scheme and host, no path (e.g. "
                    "https://app.example.com), or *"
                )
        return value

    @field_validator("jwt_algorithms")
    @classmethod
    def _known_algorithms(cls, value: list[str]) -> list[str]:
        allowed = set(JWT_ALGORITHMS)
        bad = [alg for alg in value if alg not in allowed]
        if bad or not value:
            raise ValueError(f"unsupported JWT algorithms {bad}; choose from {sorted(allowed)}")
        return value

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        value = value.lower()
        if value not in LOG_LEVELS:
            raise ValueError(f"LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}")
        return value

    @field_validator(
        "redis_url",
        "supabase_url",
        "supabase_jwt_secret",
        "jwks_url",
        "metrics_token",
        mode="before",
    )
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _refuse_placeholder_secret(self) -> Settings:
        secret = self.supabase_jwt_secret
        if (
            self.environment == "production"
            and secret is not None
            and (secret.lower() in _PLACEHOLDERS or len(secret) < 32)
        ):
            raise ValueError(
                "SUPABASE_JWT_SECRET looks like a placeholder (or is shorter than 32 "
                "characters); set the project's real JWT secret in production"
            )
        if self.supabase_url:
            self.supabase_url = self.supabase_url.rstrip("/")
        return self

    @property
    def is_production(self) -> bool:
        return self.environment == "production"

    @property
    def metrics_mode(self) -> Literal["public", "protected", "off"]:
        if self.metrics is not None:
            return self.metrics
        return "protected" if self.is_production else "public"

    @property
    def effective_jwks_url(self) -> str | None:
        if self.jwks_url:
            return self.jwks_url
        if self.supabase_url:
            return f"{self.supabase_url}/auth/v1/.well-known/jwks.json"
        return None

    @property
    def expected_issuer(self) -> str | None:
        return f"{self.supabase_url}/auth/v1" if self.supabase_url else None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


# --- the reference table (docs/CONFIGURATION.md) ---

# What a field accepts when a validator, not the field's type or bounds, decides it.
_ACCEPTED_BY_VALIDATOR = {
    "log_level": " \\| ".join(f"`{level}`" for level in LOG_LEVELS),
    "jwt_algorithms": "comma-separated, of " + ", ".join(f"`{a}`" for a in JWT_ALGORITHMS),
    "redis_url": "`redis://`, `rediss://`, `unix://`, `redis+cluster://` or "
    "`rediss+cluster://` URL",
    "supabase_url": "URL",
    "jwks_url": "URL",
    "supabase_jwt_secret": "text; in production 32 characters or more, not a placeholder",
    "trusted_proxies": "comma-separated IP addresses and networks",
    "cors_origins": "comma-separated origins (`https://host[:port]`), or `*`",
}
# The unit a field's name ends with, shown after its default.
_UNITS = (("_seconds", "s"), ("_ms", "ms"), ("_bytes", "bytes"), ("_per_minute", "per minute"))


def env_names(name: str, field: FieldInfo) -> list[str]:
    """The environment variables a field is read from, first choice first."""
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        return [str(choice) for choice in alias.choices]
    if isinstance(alias, str):
        return [alias]
    return [name.upper()]


def _number(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _default(name: str, field: FieldInfo) -> str:
    value: Any = field.get_default(call_default_factory=True)
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, Path):
        text = value.as_posix()
        if not value.is_absolute() and not text.startswith("."):
            text = f"./{text}"
        return f"`{text}`"
    if isinstance(value, list):
        return "`" + ",".join(str(item) for item in value) + "`" if value else "none"
    if isinstance(value, int | float):
        text = f"`{_number(value)}`"
        unit = next((unit for suffix, unit in _UNITS if name.endswith(suffix)), None)
        if unit:
            text += f" {unit}"
        if unit == "bytes" and value >= 1024 * 1024 and value % (1024 * 1024) == 0:
            text += f" ({value // (1024 * 1024)} MiB)"
        return text
    return f"`{value}`"


def _accepted(name: str, field: FieldInfo) -> str:
    if name in _ACCEPTED_BY_VALIDATOR:
        return _ACCEPTED_BY_VALIDATOR[name]
    annotation = field.annotation
    choices = [a for a in get_args(annotation) if a is not type(None)]
    if len(choices) == 1 and type(None) in get_args(annotation):
        annotation = choices[0]  # optional: unset is in the default column
    if get_origin(annotation) is Literal:
        return " \\| ".join(f"`{choice}`" for choice in get_args(annotation))
    if annotation is bool:
        return "`true` \\| `false`"
    if annotation is Path:
        return "path"
    low: object = None
    high: object = None
    low_strict = high_strict = False
    pattern = None
    for item in field.metadata:
        if isinstance(item, annotated_types.Ge):
            low = item.ge
        elif isinstance(item, annotated_types.Gt):
            low, low_strict = item.gt, True
        elif isinstance(item, annotated_types.Le):
            high = item.le
        elif isinstance(item, annotated_types.Lt):
            high, high_strict = item.lt, True
        pattern = getattr(item, "pattern", None) or pattern
    if pattern:
        return f"matches `{pattern}`"
    kind = "integer" if annotation is int else "number" if annotation is float else "text"
    if low is not None and high is not None and not (low_strict or high_strict):
        return f"{kind}, {_number(low)} to {_number(high)}"
    bounds = []
    if low is not None:
        bounds.append(f"{'>' if low_strict else '≥'} {_number(low)}")
    if high is not None:
        bounds.append(f"{'<' if high_strict else '≤'} {_number(high)}")
    return f"{kind}, {', '.join(bounds)}" if bounds else kind


def reference_markdown() -> str:
    """The table of every setting: its variable(s), default, what it accepts, and what
    it does, in the class's order. docs/CONFIGURATION.md holds a copy a test compares."""
    lines = ["| variable | default | accepted | meaning |", "|---|---|---|---|"]
    for name, field in Settings.model_fields.items():
        if not field.description:
            raise ValueError(f"Settings.{name} has no description")
        first, *others = env_names(name, field)
        variable = f"`{first}`" + "".join(f" (or `{other}`)" for other in others)
        cells = [variable, _default(name, field), _accepted(name, field), field.description]
        lines.append("| " + " | ".join(cell.replace("\n", " ") for cell in cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover - prints the docs table
    print(reference_markdown())
