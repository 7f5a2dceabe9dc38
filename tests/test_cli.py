"""The `healthcomp` command's refusals: an invalid configuration in one line per setting
(never a traceback, never a value), and the demo payment provider refused in
production."""

from __future__ import annotations

from pathlib import Path

import pytest

from healthcomp import cli


def _run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, env: dict[str, str], *argv: str) -> str:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)  # no stray .env
    with pytest.raises(SystemExit) as stopped:
        cli.main(list(argv))
    return str(stopped.value.code)


def test_an_invalid_setting_is_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    said = _run(monkeypatch, tmp_path, {"PORT": "0"}, "token", "--user", "a")
    assert said.startswith("healthcomp: the configuration is invalid:")
    assert "PORT: Input should be greater than or equal to 1" in said
    secret = "changeme"
    said = _run(
        monkeypatch,
        tmp_path,
        {"PORT": "8082", "ENVIRONMENT": "production", "SUPABASE_JWT_SECRET": secret},
        "token",
        "--user",
        "a",
    )
    assert "SUPABASE_JWT_SECRET looks like a placeholder" in said
    assert "Value error" not in said and "Traceback" not in said and secret not in said


def test_the_demo_payment_provider_is_refused_in_production(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env = {"ENVIRONMENT": "production", "SUPABASE_JWT_SECRET": "s" * 48}
    said = _run(monkeypatch, tmp_path, env, "payouts", "--once", "--data-dir", str(tmp_path))
    assert "give --provider" in said
    assert not (tmp_path / "redis").exists()  # refused before anything started
