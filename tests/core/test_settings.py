"""SPEC §2: configuration from the environment (the original names) and a `.env` file."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from healthcomp.core.settings import Settings

ORIGINAL_NAMES = (
    "PORT",
    "REDIS_URL",
    "SUPABASE_URL",
    "SUPABASE_JWT_SECRET",
    "SUPABASE_ANON_KEY",
    "ENVIRONMENT",
    "LOG_LEVEL",
)
OWN_NAMES = (
    "HC_HOST",
    "HOST",
    "HC_WORKERS",
    "HC_DATA_DIR",
    "HC_KEY_PREFIX",
    "HC_JWT_ALGORITHMS",
    "HC_JWKS_URL",
    "HC_MAX_BODY_BYTES",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in ORIGINAL_NAMES + OWN_NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_defaults() -> None:
    settings = Settings()
    assert settings.port == 8082
    assert settings.redis_url is None
    assert settings.supabase_url is None
    assert settings.supabase_jwt_secret is None
    assert settings.environment == "development"
    assert settings.log_level == "info"
    assert settings.data_dir == Path("data")
    assert settings.max_body_bytes == 1024 * 1024
    assert settings.effective_jwks_url is None and settings.expected_issuer is None


def test_original_names_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "s" * 48
    monkeypatch.setenv("PORT", "9191")
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6390/3")
    monkeypatch.setenv("SUPABASE_URL", "http://127.0.0.1:54321/")
    monkeypatch.setenv("SUPABASE_JWT_SECRET", secret)
    monkeypatch.setenv("SUPABASE_ANON_KEY", "anon-key-value")
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.setenv("LOG_LEVEL", "DEBUG")
    settings = Settings()
    assert settings.port == 9191
    assert settings.redis_url == "redis://127.0.0.1:6390/3"
    assert settings.supabase_url == "http://127.0.0.1:54321"
    assert settings.supabase_jwt_secret == secret
    assert settings.supabase_anon_key == "anon-key-value"
    assert settings.environment == "production" and settings.is_production
    assert settings.log_level == "debug"
    assert settings.effective_jwks_url == "http://127.0.0.1:54321/auth/v1/.well-known/jwks.json"
    assert settings.expected_issuer == "http://127.0.0.1:54321/auth/v1"


def test_own_names_are_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HC_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("HC_JWT_ALGORITHMS", " ES256 , RS256 ")
    monkeypatch.setenv("HC_JWKS_URL", "http://127.0.0.1:1/keys")
    monkeypatch.setenv("HC_MAX_BODY_BYTES", "4096")
    monkeypatch.setenv("HOST", "0.0.0.0")
    settings = Settings()
    assert settings.data_dir == tmp_path / "d"
    assert settings.jwt_algorithms == ["ES256", "RS256"]
    assert settings.effective_jwks_url == "http://127.0.0.1:1/keys"
    assert settings.max_body_bytes == 4096
    assert settings.host == "0.0.0.0"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PORT", "0"),
        ("PORT", "http"),
        ("ENVIRONMENT", "staging"),
        ("LOG_LEVEL", "loud"),
        ("HC_JWT_ALGORITHMS", "none"),
        ("HC_JWT_ALGORITHMS", "HS256,none"),
        ("HC_JWT_ALGORITHMS", ""),
    ],
)
def test_invalid_values_are_refused(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings()


@pytest.mark.parametrize("value", ["", "   "])
def test_empty_redis_url_means_embedded(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("REDIS_URL", value)
    monkeypatch.setenv("SUPABASE_JWT_SECRET", value)
    monkeypatch.setenv("SUPABASE_URL", value)
    settings = Settings()
    assert settings.redis_url is None
    assert settings.supabase_jwt_secret is None
    assert settings.supabase_url is None


def test_dotenv_in_cwd_is_honoured(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        "# a comment\n"
        "PORT=9001\n"
        "REDIS_URL=redis://127.0.0.1:6391/2\n"
        "SUPABASE_URL=http://127.0.0.1:54321\n"
        "SUPABASE_JWT_SECRET='quoted secret value'\n"
        "SUPABASE_ANON_KEY=anon\n"
        "ENVIRONMENT=development\n"
        "LOG_LEVEL=warning\n"
        "HC_KEY_PREFIX=from-dotenv\n"
        "SOMETHING_ELSE=ignored\n"
    )
    settings = Settings()
    assert settings.port == 9001
    assert settings.redis_url == "redis://127.0.0.1:6391/2"
    assert settings.supabase_url == "http://127.0.0.1:54321"
    assert settings.supabase_jwt_secret == "quoted secret value"
    assert settings.supabase_anon_key == "anon"
    assert settings.log_level == "warning"
    assert settings.key_prefix == "from-dotenv"


def test_environment_beats_dotenv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("PORT=9001\nREDIS_URL=redis://127.0.0.1:6391/2\n")
    monkeypatch.setenv("PORT", "9002")
    monkeypatch.setenv("REDIS_URL", "")
    settings = Settings()
    assert settings.port == 9002
    # An empty REDIS_URL in the environment still means "no external Redis".
    assert settings.redis_url is None


def test_empty_redis_url_in_dotenv(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("REDIS_URL=\n")
    assert Settings().redis_url is None


def test_dotenv_elsewhere_is_not_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text("PORT=9001\n")
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    assert Settings().port == 8082
