"""Recount jobs: after an edit that changes what counts (metric, window, format, goal,
grace), every participant's score is summed again under the new rules.

The edit itself (one script) records the new rules, snapshots the participants into a
list and starts the job at cursor 0. A runner then takes the job's lease and walks the
snapshot in chunks: for each participant, the user's side brings their record of the
window up to date and reads their days in the new window; the competition's side
replaces the counted days (keeping any newer version a sync brought meanwhile) and sums
every total again, atomically, emitting an event when the score moved. The cursor
advances after each chunk, so a runner that dies resumes where it stopped; counting a
participant twice changes nothing. A newer edit supersedes the job (its steps answer
`STALE`) and starts its own.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from typing import Any

from healthcomp.core import metrics
from healthcomp.core.context import AppContext
from healthcomp.engine import scripts, writes
from healthcomp.engine.codes import Reply

log = logging.getLogger("healthcomp.engine.recount")

LEASE_MS = 15_000
_PROCESS = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"


async def run(ctx: AppContext, cid: str, now_ms: int) -> bool:
    """Run (or resume) the competition's recount job. True when no job is left to run
    here: finished, superseded, or nothing running; False when another runner (here or
    in another process) holds the lease."""
    k = ctx.keys
    # One owner per run, not per process: the sweep must not walk a job beside the
    # edit's own runner in the same process.
    owner = f"{_PROCESS}-{uuid.uuid4().hex[:8]}"
    chunk = ctx.settings.recount_chunk
    lease = await scripts.RECOUNT_LEASE(ctx, [k.recount(cid), k.meta(cid)], [owner, LEASE_MS])
    if Reply(int(lease[0])) is not Reply.OK:
        state = await ctx.r.hget(k.recount(cid), "state")
        if state != "running":
            await ctx.r.srem(k.recounts(), cid)
            return True
        return False
    rules, cursor, total = int(lease[1]), int(lease[2]), int(lease[3])
    window = (str(lease[4]), str(lease[5]), int(lease[6]))
    metrics.RECOUNT_JOBS.labels("resumed" if cursor else "started").inc()
    while cursor < total:
        users = [
            str(u) for u in await ctx.r.lrange(k.recount_list(cid), cursor, cursor + chunk - 1)
        ]
        if not users:
            break
        steps = await asyncio.gather(*(_step(ctx, cid, u, rules, window, now_ms) for u in users))
        if any(code is Reply.STALE for code in steps):
            metrics.RECOUNT_JOBS.labels("superseded").inc()
            return True  # a newer edit owns the competition's recount now
        metrics.RECOUNT_PARTICIPANTS.inc(len(users))
        cursor += len(users)
        res = await scripts.RECOUNT_CURSOR(ctx, [k.recount(cid)], [rules, cursor])
        if Reply(int(res[0])) is not Reply.OK:
            return True
        renewed = await scripts.RECOUNT_LEASE(ctx, [k.recount(cid), k.meta(cid)], [owner, LEASE_MS])
        if Reply(int(renewed[0])) is not Reply.OK:
            # Finished by the last step, or superseded.
            break
    if await ctx.r.hget(k.recount(cid), "state") != "running":
        metrics.RECOUNT_JOBS.labels("finished").inc()
        await ctx.r.srem(k.recounts(), cid)
    return True


async def _step(
    ctx: AppContext,
    cid: str,
    user_id: str,
    rules: int,
    window: tuple[str, str, int],
    now_ms: int,
) -> Reply:
    k = ctx.keys
    start, end, deadline_ms = window
    days = await scripts.RECOUNT_READ(
        ctx,
        [k.effective(user_id), k.windows(user_id), k.owed(user_id)],
        [cid, start, end, deadline_ms, rules],
    )
    n = int(days[1])
    keys = writes.board_keys(
        ctx,
        cid,
        k.participant_days(cid, user_id),
        k.adjustments(cid),
        k.recount(cid),
        k.recount_done(cid),
        k.field(cid),
        k.aggregates(cid),
        k.movers(cid),
        k.excluded(cid),
    )
    args: list[Any] = [cid, user_id, now_ms, rules, n, *days[2 : 2 + n * 6]]
    res = await scripts.RECOUNT_STEP(ctx, keys, args)
    return Reply(int(res[0]))


async def run_all(ctx: AppContext, now_ms: int) -> int:
    """Every registered job (the sweep). Returns how many were run to the end here."""
    finished = 0
    for cid in sorted(str(c) for c in await ctx.r.smembers(ctx.keys.recounts())):
        try:
            if await run(ctx, cid, now_ms):
                finished += 1
        except Exception:  # one job's failure must not stop the others
            log.exception("recount of %s failed; it resumes at the next sweep", cid)
    return finished
