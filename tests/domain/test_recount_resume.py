"""Recounts as background jobs (issue #6): a rule edit before the start recounts every
participant in a job that survives its runner, resumes where it stopped, runs once and
ends exact; a newer edit supersedes it.

The boards are compared with a from-scratch model of what the test synced: per day the
maximum of each metric across sources; a participant's totals are the sums over the
window, their score the total of the metric (or, in a goal competition, the days that
reach the daily target); ranks are standard competition ranks (1, 2, 2, 4).

Days are seeded through the engine from the test process (the window lies in the
future: the API takes no future days, and rules change only before the start).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.exceptions import RedisClusterException, RedisError

from healthcomp.core.auth import Authenticator
from healthcomp.core.clock import FixedClock, to_ms
from healthcomp.core.context import AppContext
from healthcomp.core.embedded import EMBEDDED_URL_ENV, free_loopback_port
from healthcomp.core.keys import Keys
from healthcomp.core.redis import RedisHandle, create_client, is_cluster_url
from healthcomp.core.settings import Settings
from healthcomp.engine import recount, scripts, writes
from healthcomp.engine.codes import Reply
from healthcomp.engine.reads import competitions_of, events_since
from tests.conftest import (
    START,
    TEST_SECRET,
    _delete_prefix,
    auth,
    make_settings,
    settings_env_names,
)
from tests.core.support import running_app

API = "/api/v1"
METRICS = ("steps", "distance", "calories", "active_minutes")
Values = tuple[int, int, int, int]


# --- the model -----------------------------------------------------------------------


@dataclass(frozen=True)
class Rules:
    start: date
    end: date
    metric: str = "steps"
    target: int | None = None  # a goal competition's daily target

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "start_date": self.start.isoformat(),
            "end_date": self.end.isoformat(),
            "metric": self.metric,
        }
        if self.target is None:
            out["format"] = "ranked"
        else:
            out.update(format="goal", goal={"daily_target": self.target, "min_days": 1})
        return out


@dataclass
class Activity:
    """What the test synced: user -> (day, source) -> values, the latest per source."""

    records: dict[str, dict[tuple[str, str], Values]] = field(default_factory=dict)

    def add(self, user: str, day: date, source: str, values: Values) -> None:
        self.records.setdefault(user, {})[(day.isoformat(), source)] = values

    def of(self, user: str) -> list[tuple[str, str, Values]]:
        return [(d, s, v) for (d, s), v in sorted(self.records.get(user, {}).items())]

    def effective(self, user: str) -> dict[str, Values]:
        out: dict[str, Values] = {}
        for (day, _), values in self.records.get(user, {}).items():
            old = out.get(day, (0, 0, 0, 0))
            out[day] = (
                max(old[0], values[0]),
                max(old[1], values[1]),
                max(old[2], values[2]),
                max(old[3], values[3]),
            )
        return out

    def totals(self, user: str, rules: Rules) -> dict[str, int]:
        first, last = rules.start.isoformat(), rules.end.isoformat()
        days = [v for d, v in self.effective(user).items() if first <= d <= last]
        return {name: sum(v[i] for v in days) for i, name in enumerate(METRICS)}

    def score(self, user: str, rules: Rules) -> int:
        i = METRICS.index(rules.metric)
        if rules.target is None:
            return self.totals(user, rules)[rules.metric]
        first, last = rules.start.isoformat(), rules.end.isoformat()
        return sum(
            1
            for d, v in self.effective(user).items()
            if first <= d <= last and v[i] >= rules.target
        )


def random_activity(users: list[str], days: list[date], seed: int) -> Activity:
    """Several days per user, inside and outside the windows, some from two sources;
    coarse values, so that ties happen."""
    rng = random.Random(seed)
    activity = Activity()
    for user in users:
        for day in rng.sample(days, min(len(days), rng.randint(4, 9))):
            for source in rng.sample(["phone", "watch"], rng.randint(1, 2)):
                activity.add(user, day, source, random_values(rng))
    return activity


def random_values(rng: random.Random) -> Values:
    return (
        rng.randrange(0, 30_001, 1000),
        rng.randrange(0, 20_001, 500),
        rng.randrange(0, 3001, 250),
        rng.randrange(0, 241, 30),
    )


def assert_exact(board: dict[str, Any], activity: Activity, users: list[str], rules: Rules) -> None:
    """Every participant at the model's totals and score, in rank order, ranked 1, 2, 2, 4."""
    entries = board["entries"]
    assert board["total_count"] == len(users)
    assert sorted(e["user_id"] for e in entries) == sorted(users)
    wrong = [
        (e["user_id"], e["score"], activity.score(e["user_id"], rules))
        for e in entries
        if e["score"] != activity.score(e["user_id"], rules)
    ]
    assert not wrong, f"{len(wrong)} score(s) off the model (user, board, model): {wrong[:10]}"
    for e in entries:
        totals = {name: e[name] for name in METRICS}
        assert totals == activity.totals(e["user_id"], rules), e
    scores = [e["score"] for e in entries]
    assert scores == sorted(scores, reverse=True)
    for e in entries:
        assert e["rank"] == 1 + sum(1 for s in scores if s > e["score"]), e


# --- seeding through the engine --------------------------------------------------------


async def seed(
    ctx: AppContext, cid: str, activity: Activity, users: list[str], now_ms: int
) -> None:
    """Joins and syncs, concurrently: half the users sync before joining (their days
    come in by the join's back-fill), half after."""
    gate = asyncio.Semaphore(64)

    async def one(i: int, user: str) -> None:
        async with gate:
            if i % 2:
                await writes.sync(ctx, user, now_ms, activity.of(user))
            joined = await writes.join(ctx, cid, user, f"User {user}", now_ms)
            assert joined.code is Reply.OK, (user, joined)
            if not i % 2:
                synced = await writes.sync(ctx, user, now_ms, activity.of(user))
                assert synced.code is Reply.OK

    await asyncio.gather(*(one(i, u) for i, u in enumerate(users)))


async def create(client: httpx.AsyncClient, cid: str, rules: Rules) -> None:
    body = {"id": cid, "name": f"Recount {cid}", **rules.body()}
    resp = await client.post(f"{API}/competitions", json=body, headers=auth("org"))
    assert resp.status_code == 201, resp.text


async def get_board(client: httpx.AsyncClient, cid: str) -> dict[str, Any]:
    resp = await client.get(f"{API}/leaderboard/{cid}", params={"limit": 1000}, headers=auth("org"))
    assert resp.status_code == 200, resp.text
    data: dict[str, Any] = resp.json()["data"]
    return data


async def get_recount(client: httpx.AsyncClient, cid: str) -> dict[str, Any]:
    resp = await client.get(f"{API}/competitions/{cid}", headers=auth("org"))
    assert resp.status_code == 200, resp.text
    job: dict[str, Any] = resp.json()["data"]["recount"]
    return job


async def job_of(ctx: AppContext, cid: str) -> dict[str, str]:
    job: dict[str, str] = await ctx.r.hgetall(ctx.keys.recount(cid))
    return job


# --- in process: interrupted, resumed, superseded ----------------------------------------

# The test clock: 2026-11-10. The windows lie in December, so every edit is allowed.
DEC = [date(2026, 12, d) for d in range(1, 22)]
OLD = Rules(date(2026, 12, 5), date(2026, 12, 10))
NEW = Rules(date(2026, 12, 2), date(2026, 12, 15), "distance")
NEWEST = Rules(date(2026, 12, 4), date(2026, 12, 18), "steps", target=12_000)
N_FAST = 40
CHUNK_FAST = 7


class Crash(Exception):
    """A runner dying between two steps of its job."""


def crash_at_cursor(
    monkeypatch: pytest.MonkeyPatch,
    call: int,
    before: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """The `call`-th move of a job's cursor: runs `before` (if given) and carries on, or
    (without it) dies before the cursor moves, as a killed process would."""
    real = scripts.RECOUNT_CURSOR
    seen = 0

    async def cursor(ctx: AppContext, keys: list[Any], args: list[Any]) -> Any:
        nonlocal seen
        seen += 1
        if seen == call:
            if before is None:
                raise Crash
            await before()
        return await real(ctx, keys, args)

    monkeypatch.setattr(scripts, "RECOUNT_CURSOR", cursor)


def count_steps(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The users every runner steps from now on, in order."""
    stepped: list[str] = []
    real = recount._step

    async def step(ctx: AppContext, cid: str, user_id: str, *args: Any) -> Reply:
        stepped.append(user_id)
        return await real(ctx, cid, user_id, *args)

    monkeypatch.setattr(recount, "_step", step)
    return stepped


async def test_interrupted_recount_resumes_where_it_stopped_and_ends_exact(
    tmp_path: Path,
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = make_settings(tmp_path, redis_url, sweep_seconds=3600.0, recount_chunk=CHUNK_FAST)
    users = [f"u{i:03d}" for i in range(N_FAST)]
    activity = random_activity(users, DEC, seed=61)
    now_ms = to_ms(START)
    async with running_app(settings, FixedClock(START)) as (app, client):
        ctx: AppContext = app.state.ctx
        cid = "resume"
        await create(client, cid, OLD)
        await seed(ctx, cid, activity, users, now_ms)
        assert_exact(await get_board(client, cid), activity, users, OLD)

        # The edit's runner dies after stepping two chunks, before the second cursor move.
        monkeypatch.setattr(recount, "LEASE_MS", 400)
        crash_at_cursor(monkeypatch, 2)
        resp = await client.patch(f"{API}/competitions/{cid}", json=NEW.body(), headers=auth("org"))
        # The edit is made; its recount's failure is the background's business (logged).
        assert resp.status_code == 200, resp.text
        assert "recount failed; the sweep resumes it" in caplog.text
        assert resp.json()["data"]["recount"] == {
            "state": "running",
            "done": 2 * CHUNK_FAST,
            "total": N_FAST,
        }
        job = await job_of(ctx, cid)
        assert (job["cursor"], job["done"]) == (str(CHUNK_FAST), str(2 * CHUNK_FAST))
        assert (await get_board(client, cid))["recounting"] is True
        snapshot = [str(u) for u in await ctx.r.lrange(ctx.keys.recount_list(cid), 0, -1)]
        assert sorted(snapshot) == users

        # Meanwhile: syncs (a correction, a day only the new window holds) for users
        # recounted (first chunk), stepped but behind the cursor (second) and waiting;
        # a leave and a join.
        rng = random.Random(62)
        for user in (snapshot[0], snapshot[CHUNK_FAST + 1], snapshot[-1]):
            day = DEC[rng.randrange(len(DEC))]
            activity.add(user, day, "phone", random_values(rng))
            activity.add(user, date(2026, 12, 3), "watch", (9000, 7500, 500, 60))
            synced = await writes.sync(ctx, user, now_ms, activity.of(user))
            assert synced.code is Reply.OK
        leaver = snapshot[-2]  # not recounted yet
        assert (await writes.leave(ctx, cid, leaver, now_ms)).code is Reply.OK
        participants = [u for u in users if u != leaver]
        newcomer = "u999"
        activity.add(newcomer, date(2026, 12, 14), "phone", (4000, 3000, 200, 20))
        await writes.sync(ctx, newcomer, now_ms, activity.of(newcomer))
        assert (await writes.join(ctx, cid, newcomer, "New", now_ms)).code is Reply.OK
        participants.append(newcomer)

        # Another runner finds the dead runner's lease and leaves the job alone ...
        stepped = count_steps(monkeypatch)
        assert await recount.run(ctx, cid, now_ms) is False
        assert stepped == []
        # ... until it expires; then the sweep resumes at the cursor: the second chunk
        # is stepped again (changing nothing), the first is not.
        await asyncio.sleep(0.45)
        assert await recount.run_all(ctx, now_ms) == 1
        assert stepped == snapshot[CHUNK_FAST:]
        job = await job_of(ctx, cid)
        assert job["state"] == "done" and job["done"] == job["total"] == str(N_FAST)
        assert not await ctx.r.sismember(ctx.keys.recounts(), cid)
        assert await get_recount(client, cid) == {
            "state": "done",
            "done": N_FAST,
            "total": N_FAST,
        }

        board = await get_board(client, cid)
        assert board["recounting"] is False
        assert_exact(board, activity, participants, NEW)
        # The events replay to the board: each participant's last one holds their score.
        last: dict[str, int] = {}
        for event in await events_since(ctx, cid, 0, count=5000):
            if event.data.get("user_id") and "score" in event.data:
                last[event.data["user_id"]] = event.data["score"]
        assert {u: last[u] for u in participants} == {
            e["user_id"]: e["score"] for e in board["entries"]
        }
        # The leaver's record of their competitions does not get this one back.
        assert cid not in await competitions_of(ctx, leaver)
        # Every participant's record holds the new window, so later syncs reach it.
        for user in participants:
            window = await ctx.r.hget(ctx.keys.windows(user), cid)
            assert str(window).startswith(f"{NEW.start}|{NEW.end}|"), (user, window)


async def test_a_newer_edit_supersedes_the_running_recount(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(tmp_path, redis_url, sweep_seconds=3600.0, recount_chunk=CHUNK_FAST)
    users = [f"s{i:03d}" for i in range(N_FAST)]
    activity = random_activity(users, DEC, seed=63)
    async with running_app(settings, FixedClock(START)) as (app, client):
        ctx: AppContext = app.state.ctx
        cid = "supersede"
        await create(client, cid, OLD)
        await seed(ctx, cid, activity, users, to_ms(START))
        second: list[httpx.Response] = []

        async def edit_again() -> None:
            # The first job has stepped one chunk; the second edit lands now, and its
            # own runner finishes inline.
            second.append(
                await client.patch(
                    f"{API}/competitions/{cid}", json=NEWEST.body(), headers=auth("org")
                )
            )

        crash_at_cursor(monkeypatch, 1, before=edit_again)
        stepped = count_steps(monkeypatch)
        first = await client.patch(
            f"{API}/competitions/{cid}", json=NEW.body(), headers=auth("org")
        )
        assert first.status_code == 200, first.text
        assert len(second) == 1 and second[0].status_code == 200, second
        assert second[0].json()["data"]["recount"] == {
            "state": "done",
            "done": N_FAST,
            "total": N_FAST,
        }
        # The first runner stepped one chunk, then stopped at its stale cursor: nothing
        # after the newer job's N_FAST steps.
        assert len(stepped) == CHUNK_FAST + N_FAST
        job = await job_of(ctx, cid)
        assert job["state"] == "done" and job["rules"] == "3"
        assert await recount.run_all(ctx, to_ms(START)) == 0
        board = await get_board(client, cid)
        assert board["recounting"] is False
        assert_exact(board, activity, users, NEWEST)


async def test_one_runner_per_job_in_a_process(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The edit's runner and the sweep in the same process do not both walk the job."""
    settings = make_settings(tmp_path, redis_url, sweep_seconds=3600.0, recount_chunk=5)
    users = [f"r{i:03d}" for i in range(20)]
    activity = random_activity(users, DEC, seed=64)
    async with running_app(settings, FixedClock(START)) as (app, client):
        ctx: AppContext = app.state.ctx
        cid = "once"
        await create(client, cid, OLD)
        await seed(ctx, cid, activity, users, to_ms(START))
        sweeps: list[bool] = []

        async def sweep_now() -> None:
            sweeps.append(await recount.run(ctx, cid, to_ms(START)))

        crash_at_cursor(monkeypatch, 1, before=sweep_now)
        stepped = count_steps(monkeypatch)
        resp = await client.patch(f"{API}/competitions/{cid}", json=NEW.body(), headers=auth("org"))
        assert resp.status_code == 200, resp.text
        assert sweeps == [False]  # the edit's runner holds the lease
        assert sorted(stepped) == sorted(users)
        assert_exact(await get_board(client, cid), activity, users, NEW)


# --- real processes: kill -9 part-way, restart, exact --------------------------------------

N_SLOW = 1000
KILL_AT = N_SLOW // 5  # the first process is killed once this many are recounted


class Service:
    """`healthcomp serve` on a free loopback port, on the test's Redis and key prefix."""

    def __init__(self, root: Path, name: str, redis_url: str, prefix: str) -> None:
        self.port = free_loopback_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = root / f"{name}.log"
        names = settings_env_names() | {EMBEDDED_URL_ENV}
        env = {k: v for k, v in os.environ.items() if k.upper() not in names}
        env.update(
            PYTHONUNBUFFERED="1",
            REDIS_URL=redis_url,
            HC_KEY_PREFIX=prefix,
            SUPABASE_JWT_SECRET=TEST_SECRET,
            ENVIRONMENT="development",
            LOG_LEVEL="warning",
            HC_HOST="127.0.0.1",
            HC_DATA_DIR=str(root / "data"),
            HC_RECOUNT_INLINE_SECONDS="0",
            HC_SWEEP_SECONDS="1",
            HC_RECOUNT_CHUNK="4",  # small chunks: the kill lands part-way, mid-chunk
            HC_RATE_LIMIT_USER="0",
            HC_RATE_LIMIT_IP="0",
        )
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "healthcomp", "serve", "--port", str(self.port)],
                cwd=root,  # no stray .env
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    async def wait_healthy(self, seconds: float = 30.0) -> None:
        deadline = time.monotonic() + seconds
        async with httpx.AsyncClient(timeout=1) as http:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    pytest.fail(f"serve exited with {self.proc.returncode}:\n{self.output()}")
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get(f"{self.base}/health")).status_code == 200:
                        return
                await asyncio.sleep(0.05)
        pytest.fail(f"serve did not answer /health in {seconds}s:\n{self.output()}")

    def pids(self) -> set[int]:
        """The session's processes: `serve`, and its workers where the server forks
        them (granian) rather than running in `serve` itself (uvicorn, one worker)."""
        found = set()
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError, IndexError):
                    fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                    if int(fields[2]) == self.proc.pid:  # the process group
                        found.add(int(entry.name))
        return found

    def kill(self) -> None:
        """kill -9, the whole session; waits for the exit."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


@asynccontextmanager
async def engine_context(settings: Settings, redis_url: str) -> AsyncIterator[AppContext]:
    """The engine on the test's Redis and prefix, without an app: no sweep of its own
    (it would take the shared `sweep` lease for its interval). Deletes the keys after."""
    mode = "cluster" if is_cluster_url(redis_url) else "external"
    handle = RedisHandle(create_client(redis_url, settings), mode, redis_url)
    ctx = AppContext(
        settings=settings,
        redis=handle,
        keys=Keys(settings.key_prefix),
        auth=Authenticator(settings),
    )
    try:
        yield ctx
    finally:
        with contextlib.suppress(RedisError, RedisClusterException):
            await _delete_prefix(ctx)
        await ctx.auth.aclose()
        await handle.close()


@pytest.mark.slow
async def test_recount_of_1000_killed_part_way_resumes_after_restart_and_ends_exact(
    tmp_path: Path, redis_url: str
) -> None:
    prefix = "t" + uuid.uuid4().hex[:12]
    settings = make_settings(tmp_path, redis_url, key_prefix=prefix)
    today = datetime.now(UTC).date()
    old = Rules(today + timedelta(days=10), today + timedelta(days=14))
    new = Rules(today + timedelta(days=8), today + timedelta(days=20), "distance")
    users = [f"p{i:04d}" for i in range(N_SLOW)]
    activity = random_activity(users, [today + timedelta(days=d) for d in range(5, 24)], seed=6)
    cid = "big-recount"
    services: list[Service] = []
    async with engine_context(settings, redis_url) as ctx:
        try:
            first = Service(tmp_path, "first", redis_url, prefix)
            services.append(first)
            await first.wait_healthy()
            async with httpx.AsyncClient(base_url=first.base, timeout=10) as http:
                await create(http, cid, old)
                await seed(ctx, cid, activity, users, to_ms(datetime.now(UTC)))
                assert_exact(await get_board(http, cid), activity, users, old)

                resp = await http.patch(
                    f"{API}/competitions/{cid}", json=new.body(), headers=auth("org")
                )
                assert resp.status_code == 200, resp.text
                deadline = time.monotonic() + 30
                while True:
                    job = await get_recount(http, cid)
                    if KILL_AT <= job["done"] < job["total"]:
                        break
                    assert job["state"] == "running", f"finished before the kill: {job}"
                    assert time.monotonic() < deadline, f"no progress: {job}\n{first.output()}"
            first_pids = first.pids()
            first.kill()
            killed = await job_of(ctx, cid)
            assert killed["state"] == "running", f"finished before the kill: {killed}"
            assert KILL_AT <= int(killed["done"]) < N_SLOW
            assert int(killed["lease"].split("-", 1)[0]) in first_pids

            second = Service(tmp_path, "second", redis_url, prefix)
            services.append(second)
            await second.wait_healthy()
            async with httpx.AsyncClient(base_url=second.base, timeout=10) as http:
                # The dead runner's lease (15 s) must run out first; bounded at 60 s.
                deadline = time.monotonic() + 60
                while (job := await get_recount(http, cid))["state"] != "done":
                    assert time.monotonic() < deadline, f"not resumed: {job}\n{second.output()}"
                    await asyncio.sleep(0.2)
                assert job == {"state": "done", "done": N_SLOW, "total": N_SLOW}
                board = await get_board(http, cid)
            assert board["recounting"] is False
            assert_exact(board, activity, users, new)
            # The same job, finished by the new process.
            done = await job_of(ctx, cid)
            for name in ("rules", "started_ms", "total"):
                assert done[name] == killed[name], name
            assert int(done["lease"].split("-", 1)[0]) in second.pids()
        finally:
            for service in services:
                service.kill()
