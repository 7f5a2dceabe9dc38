"""The generated development secret and its warning (core/auth.py), for the cases the
mutation run (`python -m tests.mutation --area auth`) found untested."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import pytest

from healthcomp.core.auth import Authenticator, load_or_create_dev_secret
from tests.conftest import make_settings


def test_a_data_dir_whose_parents_do_not_exist_yet_gets_its_secret(tmp_path: Path) -> None:
    data = tmp_path / "not" / "made" / "yet"
    secret = load_or_create_dev_secret(data)
    assert (data / "jwt-secret").read_text().strip() == secret
    # 48 random bytes, URL-safe: 64 characters.
    assert len(secret) >= 64


def test_an_empty_secret_file_is_replaced(tmp_path: Path) -> None:
    # Left by a crash between creating the file and writing it (or by someone's touch):
    # a secret is written over it, and no temporary file stays behind.
    data = tmp_path / "data"
    data.mkdir()
    (data / "jwt-secret").write_text("")
    secret = load_or_create_dev_secret(data)
    assert secret and (data / "jwt-secret").read_text().strip() == secret
    assert stat.S_IMODE((data / "jwt-secret").stat().st_mode) == 0o600
    assert sorted(p.name for p in data.iterdir()) == ["jwt-secret"]
    assert load_or_create_dev_secret(data) == secret


def test_the_generated_secret_is_announced_once_per_data_dir(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(tmp_path, None, supabase_jwt_secret=None)
    with caplog.at_level(logging.WARNING, logger="healthcomp.auth"):
        first = Authenticator(settings)
        second = Authenticator(settings)
    assert first.secret == second.secret
    said = [r.getMessage() for r in caplog.records if r.name == "healthcomp.auth"]
    assert len(said) == 1, said
    assert "generated development secret" in said[0] and str(settings.data_dir) in said[0]
