"""A service process killed with -9 in the middle of batch syncs, a recount and prize
distributions; another process carries the load, a new one starts, and each piece of
work is whole or finishes by itself.

Two `healthcomp serve` processes, A and B, share a private redis-server. Under the
mixed load (batch syncs and board reads sent to both, WebSocket watchers on both) an
edit starts a background recount of 400 participants on A, and while it runs A gets
eight prize distributions at once. At the first distribution's answer A is killed
(SIGKILL to its whole session). Then:

* batches: every sync answered 200 is held; the ones A never answered are held whole
  or not at all; the board agrees with the days once the sweep has pushed what a dead
  request left owed;
* watchers: those on A reconnect to B with `since` and miss no event;
* distributions: each competition is either finalized with its whole ledger and outbox
  or untouched; those finalized are listed as finalized within seconds without another
  call (the sweep finishes the listing step A never took); distributing again (on a new
  process A') finalizes the rest and gives the very same ledger for those done before
  the kill;
* the recount: B or A' takes the job over once A's lease (15 s) has run out and ends
  with the exact board.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from bench.mixedload import outage

from healthcomp.core.clock import FixedClock, to_ms
from healthcomp.core.context import AppContext
from healthcomp.core.settings import Settings
from healthcomp.engine import writes
from healthcomp.engine.codes import Reply
from tests.conftest import make_settings
from tests.core.support import running_app
from tests.domain.test_recount_resume import (
    Rules,
    assert_exact,
    create,
    engine_context,
    get_board,
    get_recount,
    job_of,
    random_activity,
    seed,
)
from tests.faults.support import (
    PHASE,
    REQUEST_TIMEOUT,
    SERVICE_ENV,
    SERVICE_TOKEN,
    OwnRedis,
    alive,
    embedded_pass_only,
    kill_service,
    load_on,
    long_enough,
    new_board,
    ready,
    report,
    started,
    verify,
)
from tests.live.support import Service

pytestmark = [pytest.mark.slow, embedded_pass_only, long_enough]

PREFIX = "fk"
N_RECOUNT = 400
N_PRIZES = 8  # competitions distributed at the kill
PER_PRIZE = 30  # participants of each
# A runs the edit's recount in small chunks, so that the kill lands part-way; B and the
# new process, which take it over, in the default ones.
ENV_A = {
    **SERVICE_ENV,
    "HC_RECOUNT_INLINE_SECONDS": "0",  # the edit answers at once; the job runs on
    "HC_RECOUNT_CHUNK": "4",
}
SERVICE_AUTH = {"Authorization": f"Bearer {SERVICE_TOKEN}"}


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[OwnRedis]:
    redis = OwnRedis(tmp_path / "redis")
    await redis.start()
    try:
        yield redis
    finally:
        redis.stop()


async def ended_competitions(ctx: AppContext, settings: Settings) -> list[str]:
    """Competitions over (and past their grace period) with scores, ready to distribute:
    made through an app of the test's whose clock stands inside their window, joined
    and synced through the engine at that time."""
    today = datetime.now(UTC).date()
    start, end = today - timedelta(days=20), today - timedelta(days=15)
    then = datetime.combine(end - timedelta(days=1), datetime.min.time(), UTC)
    rng = random.Random(12)
    cids = [f"prize{i}" for i in range(N_PRIZES)]
    async with running_app(settings, FixedClock(then), keep_keys=True) as (_, http):
        for cid in cids:
            body = {
                "id": cid,
                "name": f"Prize {cid}",
                "metric": "steps",
                "start_date": start.isoformat(),
                "end_date": end.isoformat(),
                "prize_pool_cents": 10_000 + rng.randrange(0, 9_999),
                "currency": "USD",
            }
            resp = await http.post("/api/v1/competitions", json=body, headers=SERVICE_AUTH)
            assert resp.status_code == 201, resp.text
    gate = asyncio.Semaphore(32)

    async def one(cid: str, user: str) -> None:
        async with gate:
            joined = await writes.join(ctx, cid, user, f"User {user}", to_ms(then))
            assert joined.code is Reply.OK, joined
            steps = rng.randrange(1, 40) * 500  # coarse: ties happen
            day = (end - timedelta(days=1)).isoformat()
            synced = await writes.sync(ctx, user, to_ms(then), [(day, "phone", (steps, 0, 0, 0))])
            assert synced.code is Reply.OK

    await asyncio.gather(*(one(cid, f"{cid}-p{j:02d}") for cid in cids for j in range(PER_PRIZE)))
    return cids


async def finished(ctx: AppContext, cid: str) -> float:
    """When the competition's recount job is done (monotonic)."""
    while True:
        if await ctx.r.hget(ctx.keys.recount(cid), "state") == "done":
            return time.monotonic()
        await asyncio.sleep(0.1)


async def written(ctx: AppContext, cid: str) -> dict[str, Any]:
    """What the competition holds of a distribution: state, ledger, outbox."""
    k = ctx.keys
    ledger = await ctx.r.hgetall(k.ledger(cid))
    return {
        "state": await ctx.r.hget(k.meta(cid), "state"),
        "ledger": ledger,
        "outbox": await ctx.r.xlen(k.outbox(cid)),
    }


def assert_whole(cid: str, held: dict[str, Any]) -> bool:
    """Finalized with the whole ledger and outbox, or nothing of it. True if finalized."""
    ledger = held["ledger"]
    if held["state"] != "finalized":
        assert held["state"] == "open", (cid, held["state"])
        assert not ledger and held["outbox"] == 0, (cid, held)
        return False
    summary = orjson.loads(ledger["summary"])
    lines = [orjson.loads(v) for key, v in ledger.items() if key != "summary"]
    paid = [line for line in lines if line["amount_cents"] > 0]
    assert paid, (cid, ledger)
    assert held["outbox"] == len(paid), (cid, held["outbox"], len(paid))
    assert sum(line["amount_cents"] for line in paid) == summary["pool_cents"], (cid, summary)
    return True


async def listed_finalized(http: httpx.AsyncClient, prizes: list[str]) -> set[str]:
    """Which of the prize competitions the listing shows finalized."""
    resp = await http.get("/api/v1/competitions?status=finalized&limit=100", headers=SERVICE_AUTH)
    assert resp.status_code == 200, resp.text
    return {c["id"] for c in resp.json()["data"]["items"]} & set(prizes)


async def distribute(http: httpx.AsyncClient, cid: str) -> httpx.Response:
    return await http.post(f"/api/v1/prizes/distribute/{cid}", headers=SERVICE_AUTH)


async def test_service_killed_mid_batches_recount_and_distributions(
    server: OwnRedis, tmp_path: Path
) -> None:
    a = Service(server.url, PREFIX, tmp_path, **ENV_A)
    b = Service(server.url, PREFIX, tmp_path, **SERVICE_ENV)
    processes = [a, b]
    settings = make_settings(tmp_path, server.url, key_prefix=PREFIX)
    today = datetime.now(UTC).date()
    old = Rules(today + timedelta(days=10), today + timedelta(days=14))
    new = Rules(today + timedelta(days=8), today + timedelta(days=20), "distance")
    recounted = [f"r{i:04d}" for i in range(N_RECOUNT)]
    activity = random_activity(
        recounted, [today + timedelta(days=d) for d in range(5, 24)], seed=12
    )
    try:
        a.wait_ready()
        b.wait_ready()
        async with (
            engine_context(settings, server.url) as ctx,
            httpx.AsyncClient(base_url=a.base, timeout=REQUEST_TIMEOUT + 5) as on_a,
            httpx.AsyncClient(base_url=b.base, timeout=REQUEST_TIMEOUT + 5) as on_b,
        ):
            book = await new_board(b.base, "live", 40)
            await create(on_b, "rc", old)
            await seed(ctx, "rc", activity, recounted, to_ms(datetime.now(UTC)))
            prizes = await ended_competitions(ctx, settings)

            load = load_on([a, b], book, watchers=8)
            await load.start()
            try:
                await asyncio.sleep(PHASE)
                # The recount starts on A and runs in A's background.
                resp = await on_a.patch(
                    "/api/v1/competitions/rc", json=new.body(), headers=SERVICE_AUTH
                )
                assert resp.status_code == 200, resp.text
                deadline = time.monotonic() + 30
                while (job := await get_recount(on_b, "rc"))["done"] < N_RECOUNT // 10:
                    assert job["state"] == "running", f"finished before the kill: {job}"
                    assert time.monotonic() < deadline, f"no progress: {job}\n{a.tail()}"
                    await asyncio.sleep(0.02)
                # Eight distributions at once on A; A dies at the first answer.
                calls = [asyncio.create_task(distribute(on_a, cid)) for cid in prizes]
                await asyncio.wait(calls, return_when=asyncio.FIRST_COMPLETED)
                killed = time.monotonic()
                kill_service(a)
                load.use([b.base])
                recount_done = asyncio.create_task(finished(ctx, "rc"))
                answered = [
                    c.result().status_code
                    for c in calls
                    if c.done() and not c.cancelled() and c.exception() is None
                ]
                for call in calls:
                    with contextlib.suppress(httpx.HTTPError):
                        await call

                # Right after the kill: each distribution whole or not begun.
                before = {cid: await written(ctx, cid) for cid in prizes}
                finalized = {cid for cid in prizes if assert_whole(cid, before[cid])}
                job = await job_of(ctx, "rc")
                assert job["state"] == "running", f"the recount finished before the kill: {job}"
                done_at_kill = int(job["done"])

                listed_at_kill = await listed_finalized(on_b, prizes)

                # A new process in A's place.
                a2 = Service(server.url, PREFIX, tmp_path, **SERVICE_ENV)
                processes.append(a2)
                await started(a2)
                load.use([b.base, a2.base])
                await asyncio.sleep(PHASE)
                await load.stop()

                # Batches.
                assert {str(x.status) for x in load.attempts if x.base != a.base} <= {"200"}, (
                    load.summary()
                )
                unanswered = [x for x in load.attempts if x.status is None]
                assert all(x.base == a.base for x in unanswered)
                assert {str(r.status) for r in load.reads if r.base != a.base} <= {"200"}
                _, figures = await verify(load, b.base)

                # Distributions finalized before the kill are listed as such without
                # another call: the sweep (every second here) finishes their listing step.
                listed_by_sweep = await listed_finalized(on_b, prizes)
                deadline = time.monotonic() + 10
                while not finalized <= listed_by_sweep and time.monotonic() < deadline:
                    await asyncio.sleep(0.2)
                    listed_by_sweep = await listed_finalized(on_b, prizes)
                assert listed_by_sweep == finalized, (listed_by_sweep, finalized)

                # Distributions: again, on the new process, the same ledgers.
                async with httpx.AsyncClient(base_url=a2.base, timeout=30) as on_a2:
                    again = await asyncio.gather(*(distribute(on_a2, cid) for cid in prizes))
                assert {r.status_code for r in again} == {200}, [r.text for r in again]
                for cid in prizes:
                    after = await written(ctx, cid)
                    assert assert_whole(cid, after)
                    if cid in finalized:
                        assert after == before[cid], cid
                assert await listed_finalized(on_b, prizes) == set(prizes)
                assert await ctx.r.exists(ctx.keys.index("closing")) == 0  # no marker left

                # The recount: taken over once A's lease ran out; exact.
                resumed_after = await asyncio.wait_for(recount_done, 45) - killed
                job = await get_recount(on_b, "rc")
                assert job == {"state": "done", "done": N_RECOUNT, "total": N_RECOUNT}
                board = await get_board(on_b, "rc")
                assert board["recounting"] is False
                assert_exact(board, activity, recounted, new)
                assert alive(b) and alive(a2)
                await ready([b.base, a2.base])
            finally:
                await load.close()
    finally:
        for service in processes:
            service.stop()
    report(
        "service kill -9 mid batches, recount and distributions",
        {
            **figures,
            "unanswered_by_the_killed_process": len(unanswered),
            "unanswered_yet_stored": figures["unanswered_but_stored"],
            "distributions_answered_before_kill": len(answered),
            "finalized_at_kill": len(finalized),
            "listed_finalized_at_kill": len(listed_at_kill),
            "listed_finalized_by_the_sweep": len(listed_by_sweep),
            "finalized_after_retry": len(prizes),
            "recount_done_at_kill": f"{done_at_kill}/{N_RECOUNT}",
            "recount_finished_after_kill_s": round(resumed_after, 1),
            **{k: v for k, v in outage(load.attempts, killed).items() if k == "failed"},
            **load.summary(),
        },
    )
