"""Real service processes on the test's Redis, and a WebSocket client for them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
from bench.servers import HOST, free_port
from websockets.asyncio.client import ClientConnection, connect

from tests.conftest import TEST_SECRET, token

ROOT = Path(__file__).resolve().parents[2]


class Service:
    """One `healthcomp serve` process (uvicorn unless told otherwise, one worker) on a
    given Redis and prefix."""

    def __init__(
        self, redis_url: str, prefix: str, workdir: Path, *, server: str = "uvicorn", **env: str
    ) -> None:
        self.port = free_port()
        self.log = workdir / f"service-{self.port}.log"
        environ = {
            k: v
            for k, v in os.environ.items()
            if not k.upper().startswith(("HC_", "SUPABASE_", "REDIS_", "PORT", "ENVIRONMENT"))
        }
        environ |= {
            "REDIS_URL": redis_url,
            "HC_KEY_PREFIX": prefix,
            "SUPABASE_JWT_SECRET": TEST_SECRET,
            "ENVIRONMENT": "development",
            "LOG_LEVEL": "warning",
            "HC_DATA_DIR": str(workdir / "data"),
            "HC_RATE_LIMIT_USER": "1000000",
            "HC_RATE_LIMIT_USER_BURST": "1000000",
            "HC_RATE_LIMIT_IP": "1000000",
            **env,
        }
        cmd = [sys.executable, "-m", "healthcomp", "serve", "--host", HOST]
        cmd += ["--port", str(self.port), "--server", server]
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                cmd, env=environ, cwd=workdir, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip

    @property
    def base(self) -> str:
        return f"http://{HOST}:{self.port}"

    def ws_url(self, cid: str, **query: Any) -> str:
        params = "&".join(f"{k}={v}" for k, v in query.items())
        return f"ws://{HOST}:{self.port}/ws/leaderboard/{cid}" + (f"?{params}" if params else "")

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the service exited:\n{self.tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.base}/health/ready", timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"the service did not get ready:\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        self.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(15)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


@contextlib.contextmanager
def services(
    redis_url: str, prefix: str, workdir: Path, n: int, **env: str
) -> Iterator[list[Service]]:
    started = [Service(redis_url, prefix, workdir, **env) for _ in range(n)]
    try:
        for service in started:
            service.wait_ready()
        yield started
    finally:
        for service in started:
            service.stop()


def bearer(user: str | None, **kw: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(user, **kw)}"}


def today() -> str:
    return datetime.now(UTC).date().isoformat()


async def open_competition(
    http: httpx.AsyncClient, cid: str, organizer: str, *members: str, **fields: Any
) -> None:
    """A competition running now (started yesterday, ends in a week) with members."""
    now = datetime.now(UTC).date()
    body = {
        "id": cid,
        "name": f"Live {cid}",
        "metric": "steps",
        "start_date": (now - timedelta(days=1)).isoformat(),
        "end_date": (now + timedelta(days=7)).isoformat(),
        **fields,
    }
    resp = await http.post("/api/v1/competitions", json=body, headers=bearer(organizer))
    assert resp.status_code == 201, resp.text
    for user in members:
        resp = await http.post(f"/api/v1/competitions/{cid}/join", headers=bearer(user))
        assert resp.status_code == 200, resp.text


async def sync(http: httpx.AsyncClient, user: str, steps: int, day: str | None = None) -> Any:
    record = {"date": day or today(), "steps": steps, "source": "phone"}
    resp = await http.post("/api/v1/fitness/sync", json=record, headers=bearer(user))
    assert resp.status_code == 200, resp.text
    return resp.json()["data"]


class Watcher:
    """A WebSocket client that keeps every frame it receives, with its arrival time."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []
        self.arrived: list[float] = []
        self._new = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(Exception):
            async for raw in self.ws:
                self.frames.append(orjson.loads(raw))
                self.arrived.append(time.monotonic())
                self._new.set()
        self._new.set()

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [f for f in self.frames if f["type"] == kind]

    async def until(self, check: Any, within: float = 5.0) -> list[dict[str, Any]]:
        """Wait until `check(frames)` is true; the frames so far."""
        deadline = time.monotonic() + within
        while not check(self.frames):
            left = deadline - time.monotonic()
            if left <= 0 or self._task.done():
                seen = [(f["type"], f.get("event_id")) for f in self.frames[-12:]]
                raise AssertionError(f"timed out; the last frames (type, event_id): {seen}")
            self._new.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new.wait(), left)
        return self.frames

    async def close(self) -> None:
        await self.ws.close()
        with contextlib.suppress(BaseException):
            await self._task


async def watch(url: str, **kw: Any) -> Watcher:
    ws = await connect(url, **kw)
    return Watcher(ws)
