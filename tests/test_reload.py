"""`healthcomp serve --reload` (issue 11): a code change restarts the server, which then
answers again; refused in production."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HC_", "SUPABASE_"))}
    env.pop("REDIS_URL", None)
    env.update({"ENVIRONMENT": "development", **extra})
    return env


def _wait(log: Path, text: str, count: int = 1, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while log.read_text().count(text) < count:
        if time.monotonic() > deadline:
            pytest.fail(f"no {text!r} x{count} in the log:\n{log.read_text()}")
        time.sleep(0.1)


def test_a_code_change_restarts_the_server(tmp_path: Path) -> None:
    watched = tmp_path / "watched"
    watched.mkdir()
    module = watched / "module.py"
    module.write_text("VALUE = 1\n")
    port, log = _free_port(), tmp_path / "serve.log"
    command = [sys.executable, "-m", "healthcomp", "serve", "--reload", "--reload-dir",
               str(watched), "--data-dir", str(tmp_path / "data"), "--port", str(port)]  # fmt: skip
    with log.open("w") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=_env())
    try:
        _wait(log, "Application startup complete")
        assert httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200
        module.write_text("VALUE = 2\n")
        _wait(log, "Reloading")
        _wait(log, "Application startup complete", count=2)
        assert httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200
    finally:
        proc.terminate()
        proc.wait(20)


def test_reload_is_refused_in_production(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "healthcomp", "serve", "--reload", "--data-dir", str(tmp_path)],
        env=_env(ENVIRONMENT="production", SUPABASE_JWT_SECRET="s" * 48),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "--reload is for development" in done.stderr
