"""All configuration, from the environment and an optional `.env` file.

The variable names of the original deployment (`PORT`, `REDIS_URL`, `SUPABASE_*`,
`ENVIRONMENT`, `LOG_LEVEL`) are kept as they were; everything this service adds is
prefixed `HC_` so it cannot collide with another program's settings.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

_PLACEHOLDERS = {"changeme", "change-me", "secret", "your-jwt-secret", "super-secret", ""}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", populate_by_name=True
    )

    # --- the original names ---
    port: int = Field(8082, ge=1, le=65535, validation_alias="PORT")
    redis_url: str | None = Field(None, validation_alias="REDIS_URL")
    supabase_url: str | None = Field(None, validation_alias="SUPABASE_URL")
    supabase_jwt_secret: str | None = Field(None, validation_alias="SUPABASE_JWT_SECRET")
    supabase_anon_key: str | None = Field(None, validation_alias="SUPABASE_ANON_KEY")
    environment: Literal["development", "production"] = Field(
        "development", validation_alias="ENVIRONMENT"
    )
    log_level: str = Field("info", validation_alias="LOG_LEVEL")

    # --- this service's own ---
    host: str = Field("127.0.0.1", validation_alias=AliasChoices("HC_HOST", "HOST"))
    workers: int = Field(1, ge=1, le=64, validation_alias="HC_WORKERS")
    # The HTTP server `healthcomp serve` runs (docs/BENCHMARKS.md compares them).
    server: Literal["granian", "uvicorn"] = Field("uvicorn", validation_alias="HC_SERVER")
    data_dir: Path = Field(Path("./data"), validation_alias="HC_DATA_DIR")
    # The embedded Redis's AOF fsync policy. `everysec`: a write is in the file (the OS
    # page cache) before it is acknowledged, so it survives kill -9 of Redis and of the
    # service; only an OS crash or power loss can lose the last second. `always` also
    # survives those, at an fsync per write. See docs/ARCHITECTURE.md.
    embedded_fsync: Literal["always", "everysec"] = Field(
        "everysec", validation_alias="HC_EMBEDDED_FSYNC"
    )
    key_prefix: str = Field(
        "hc", pattern=r"^[A-Za-z0-9_.-]{1,32}$", validation_alias="HC_KEY_PREFIX"
    )
    # JWT algorithms accepted; asymmetric ones need SUPABASE_URL (JWKS). Comma-separated
    # in the environment: NoDecode keeps pydantic-settings from parsing it as JSON first.
    jwt_algorithms: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["HS256", "ES256", "RS256"], validation_alias="HC_JWT_ALGORITHMS"
    )
    jwt_leeway_seconds: int = Field(30, ge=0, le=300, validation_alias="HC_JWT_LEEWAY")
    jwks_url: str | None = Field(None, validation_alias="HC_JWKS_URL")
    jwks_cache_seconds: int = Field(600, ge=10, le=600, validation_alias="HC_JWKS_CACHE_SECONDS")
    jwks_min_refetch_seconds: float = Field(
        10.0, ge=0, le=600, validation_alias="HC_JWKS_MIN_REFETCH_SECONDS"
    )
    max_body_bytes: int = Field(1024 * 1024, ge=1024, validation_alias="HC_MAX_BODY_BYTES")
    request_timeout_seconds: float = Field(
        10.0, gt=0, le=300, validation_alias="HC_REQUEST_TIMEOUT"
    )
    redis_timeout_seconds: float = Field(2.0, gt=0, le=60, validation_alias="HC_REDIS_TIMEOUT")
    redis_max_connections: int = Field(
        64, ge=2, le=10000, validation_alias="HC_REDIS_MAX_CONNECTIONS"
    )
    # Requests per minute; 0 turns a limit off. Bursts up to the limit are allowed.
    rate_limit_user_per_minute: int = Field(1200, ge=0, validation_alias="HC_RATE_LIMIT_USER")
    rate_limit_ip_per_minute: int = Field(6000, ge=0, validation_alias="HC_RATE_LIMIT_IP")
    # How often each process sends its users' spending to Redis and reads back the
    # shared state (core/ratelimit.py): the bound on how far processes can disagree.
    rate_limit_sync_ms: int = Field(50, ge=5, le=10_000, validation_alias="HC_RATE_LIMIT_SYNC_MS")
    step_goal: int = Field(10_000, ge=1, le=100_000, validation_alias="HC_STEP_GOAL")
    # --- the live leaderboards (WebSocket, healthcomp.live) ---
    # At most one `leaderboard_update` per competition per this interval.
    ws_update_interval_ms: int = Field(
        250, ge=10, le=60_000, validation_alias="HC_WS_UPDATE_INTERVAL_MS"
    )
    # A heartbeat frame to every client, and protocol pings that drop dead peers.
    ws_heartbeat_seconds: float = Field(
        25.0, ge=0.5, le=3600, validation_alias="HC_WS_HEARTBEAT_SECONDS"
    )
    # A client further behind than this many events gets a snapshot instead.
    ws_max_lag: int = Field(256, ge=1, le=100_000, validation_alias="HC_WS_MAX_LAG")
    # A client whose socket takes no frame for this long is closed with 1013.
    ws_send_timeout_seconds: float = Field(
        10.0, ge=0.5, le=600, validation_alias="HC_WS_SEND_TIMEOUT_SECONDS"
    )
    # Connections one process holds; the next ones are closed with 1013 (try again).
    ws_max_connections: int = Field(
        20_000, ge=1, le=1_000_000, validation_alias="HC_WS_MAX_CONNECTIONS"
    )
    demo_on_start: bool = Field(False, validation_alias="HC_DEMO")
    metrics_public: bool = Field(True, validation_alias="HC_METRICS_PUBLIC")
    # A user organizes at most this many competitions that are not over (0: no cap).
    max_open_competitions: int = Field(
        20, ge=0, le=10_000, validation_alias="HC_MAX_OPEN_COMPETITIONS"
    )
    # How often one process sweeps for work a dead request left owed (recounts, syncs).
    sweep_seconds: float = Field(30.0, ge=0.5, le=3600, validation_alias="HC_SWEEP_SECONDS")
    # An edit waits this long for its recount before answering; the rest runs behind.
    recount_inline_seconds: float = Field(
        2.0, ge=0, le=60, validation_alias="HC_RECOUNT_INLINE_SECONDS"
    )
    # Participants a recount job steps at once, and between moves of its cursor.
    recount_chunk: int = Field(100, ge=1, le=10_000, validation_alias="HC_RECOUNT_CHUNK")

    @field_validator("jwt_algorithms", mode="before")
    @classmethod
    def _split_algorithms(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("jwt_algorithms")
    @classmethod
    def _known_algorithms(cls, value: list[str]) -> list[str]:
        allowed = {"HS256", "HS384", "HS512", "ES256", "RS256"}
        bad = [alg for alg in value if alg not in allowed]
        if bad or not value:
            raise ValueError(f"unsupported JWT algorithms {bad}; choose from {sorted(allowed)}")
        return value

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        value = value.lower()
        if value not in {"critical", "error", "warning", "info", "debug", "trace"}:
            raise ValueError("LOG_LEVEL must be one of critical, error, warning, info, debug")
        return value

    @field_validator("redis_url", "supabase_url", "supabase_jwt_secret", "jwks_url", mode="before")
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
