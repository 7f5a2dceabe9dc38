"""Faults under load: the pieces the fault tests share.

Each test runs real `healthcomp serve` processes (tests/live/support.py `Service`) under
the mixed load of bench/mixedload.py (batch syncs, board reads, WebSocket watchers
that resume with `since`), injects one fault, and checks what every request was
answered and what the service holds afterwards.

The Redis servers are the tests' own (a private `redis-server` on a free loopback port,
or the one `healthcomp serve` embeds), so the tests run once, on the embedded pass of
`make test`. `HC_FAULT_SECONDS` lengthens each load phase (default 2 s) for a longer run:

    HC_FAULT_SECONDS=30 .venv/bin/pytest tests/faults -s -p no:randomly
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from bench.mixedload import Attempt, Book, MixedLoad, SyncCheck, check_syncs, settle_board

from healthcomp.core.auth import SERVICE
from tests.conftest import token
from tests.core.test_unavailable import PrivateRedis
from tests.live.support import Service, open_competition

PHASE = float(os.environ.get("HC_FAULT_SECONDS", "2"))
# The service's defaults (core/settings.py), which the tests' services keep.
REQUEST_TIMEOUT = 10.0
REDIS_TIMEOUT = 2.0
# Settings of every service the fault tests start.
SERVICE_ENV = {
    "HC_SWEEP_SECONDS": "1",  # owed pushes and recounts resume within a second or so
    "PYTHONUNBUFFERED": "1",
}

# pytest's per-test timeout (120 s), stretched with the load phases of a longer run.
long_enough = pytest.mark.timeout(120 + 8 * PHASE)

embedded_pass_only = pytest.mark.skipif(
    os.environ.get("HC_TEST_BACKEND", "embedded") != "embedded",
    reason="the fault tests start their own Redis servers: run once, on the embedded pass",
)

SERVICE_TOKEN = token(None, role=SERVICE)


def user_token(user: str) -> str:
    return token(user)


class OwnRedis(PrivateRedis):
    """A private redis-server on a free loopback port, append-only with an fsync per
    write (`appendfsync always`): a write it acknowledged is on disk, so whatever a kill
    -9 loses was never acknowledged. Restartable on the same port and files."""

    def __init__(self, directory: Path, fsync: str = "always") -> None:
        super().__init__(directory, "--appendonly", "yes", "--appendfsync", fsync)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def pause(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.resume()  # a stopped server cannot act on SIGTERM
        super().stop()


@contextlib.contextmanager
def running(services: Sequence[Service]) -> Iterator[None]:
    try:
        for service in services:
            service.wait_ready()
        yield
    finally:
        for service in services:
            service.stop()


def alive(service: Service) -> bool:
    return service.proc.poll() is None


def kill_service(service: Service) -> None:
    """kill -9 of the whole process session; waits for the exit."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(service.proc.pid, signal.SIGKILL)
    service.proc.wait(10)


async def started(service: Service, within: float = 30.0) -> None:
    """`Service.wait_ready` without blocking the event loop (the load runs meanwhile)."""
    deadline = time.monotonic() + within
    async with httpx.AsyncClient(timeout=1) as http:
        while True:
            assert service.proc.poll() is None, f"the service exited:\n{service.tail()}"
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(f"{service.base}/health/ready")).status_code == 200:
                    return
            assert time.monotonic() < deadline, f"not ready:\n{service.tail()}"
            await asyncio.sleep(0.05)


async def ready(bases: Sequence[str], within: float = 30.0) -> float:
    """Until every service answers /health/ready 200; the seconds it took."""
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT + 2) as http:
        for base in bases:
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(f"{base}/health/ready")).status_code == 200:
                        break
                assert time.monotonic() - started < within, f"{base} not ready in {within} s"
                await asyncio.sleep(0.05)
    return time.monotonic() - started


async def new_board(base: str, cid: str, n: int) -> Book:
    """A steps competition running now (started yesterday) with `n` participants; the
    load's batches cover its two days so far."""
    users = [f"{cid}-u{i:03d}" for i in range(n)]
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        await open_competition(http, cid, f"{cid}-org", *users)
    today = datetime.now(UTC).date()
    return Book(cid, users, [(today - timedelta(days=1)).isoformat(), today.isoformat()])


def load_on(services: Sequence[Service], book: Book, *, watchers: int = 8, **kw: Any) -> MixedLoad:
    """The mixed load on `services`; the watchers sign in as participants."""
    tokens = [user_token(book.users[i % len(book.users)]) for i in range(watchers)]
    return MixedLoad([s.base for s in services], book, user_token, watchers=tokens, **kw)


def answers(attempts: Sequence[Attempt]) -> set[str]:
    return {str(a.status) if a.status is not None else f"none:{a.error}" for a in attempts}


def assert_503s_are_enveloped(attempts: Sequence[Attempt]) -> None:
    for a in attempts:
        if a.status == 503:
            assert a.error in ("service_unavailable", "not_ready"), a
            assert a.retry_after is not None and int(a.retry_after) > 0, a


def assert_only_200_or_503(load: MixedLoad) -> None:
    """Every sync and read was answered 200 or a 503 in the envelope with Retry-After:
    never a 500, another code or a dropped connection."""
    assert answers(load.attempts) <= {"200", "503"}, load.summary()
    assert {str(r.status) for r in load.reads} <= {"200", "503"}, load.summary()
    assert_503s_are_enveloped(load.attempts)


async def verify(
    load: MixedLoad, base: str, *, within: float = 15.0
) -> tuple[SyncCheck, dict[str, Any]]:
    """After the load stopped: every acknowledged sync held, no batch torn, the board
    equal to the days, every watcher at the board's last event. Returns the check and
    the figures."""
    book = load.book
    check = await check_syncs(base, book, user_token)
    assert not check.lost, f"acknowledged syncs lost for {sorted(set(check.lost))}"
    assert not check.torn, f"batches stored in part for {sorted(set(check.torn))}"
    assert not check.unknown, f"values no attempt sent for {sorted(set(check.unknown))}"
    wrong = await settle_board(base, book, check, SERVICE_TOKEN, within)
    assert not wrong, f"board != days (board, days): {wrong}"
    figures: dict[str, Any] = {
        "acknowledged_lost": len(set(check.lost)),
        # Answered 503 (or not at all), yet written: the reply was lost, not the write.
        "unanswered_but_stored": sum((a.user, a.k) in check.ran_unanswered for a in load.attempts),
    }
    if load.watchers.states:
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            resp = await http.get(
                f"/api/v1/leaderboard/{book.cid}?limit=1",
                headers={"Authorization": f"Bearer {SERVICE_TOKEN}"},
            )
        final = int(resp.json()["data"]["event_id"])
        late = await load.watchers.settle(final, within)
        ws = load.watchers.summary()
        assert not late, f"watchers not at event {final}: {[load.watchers.states[i] for i in late]}"
        assert ws["gaps"] == 0 and ws["repeats"] == 0, ws
        figures["final_event_id"] = final
    return check, figures


def report(name: str, figures: dict[str, Any]) -> None:
    """One line of figures, for `pytest -s` and docs/RELIABILITY.md; also appended to
    `$HC_FAULT_REPORT` when set."""
    line = orjson.dumps({"fault": name, **figures}).decode()
    print(f"\nFAULT {line}")
    path = os.environ.get("HC_FAULT_REPORT")
    if path:
        with open(path, "a") as out:
            out.write(line + "\n")
