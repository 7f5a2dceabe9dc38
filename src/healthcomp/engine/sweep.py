"""The background sweep: finishes work that a dead request or process left owed.

Every `HC_SWEEP_SECONDS` one process (whoever takes the `sweep` lease) runs the
recount jobs still registered, pushes every user's owed days and back-fills, then runs
the steps the domains above the engine hand it (`Step`: the competitions' listing step
of a cancel or a distribution cut short). Each step is idempotent, so a sweep racing a
live request, or two sweeps, change nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from redis.exceptions import RedisClusterException, RedisError

from healthcomp.core.clock import to_ms
from healthcomp.core.context import AppContext
from healthcomp.engine import recount, writes

log = logging.getLogger("healthcomp.engine.sweep")

# Owed back-fills younger than this belong to joins still in flight.
JOIN_GRACE_MS = 30_000

# A step of a domain above the engine: (context, now in ms) -> how much it repaired.
Step = Callable[[AppContext, int], Awaitable[int]]


async def run_once(
    ctx: AppContext, *, join_grace_ms: int = JOIN_GRACE_MS, steps: Sequence[Step] = ()
) -> int:
    """One sweep, whatever the lease. Returns how many owed days it pushed."""
    now_ms = to_ms(ctx.clock.now())
    await recount.run_all(ctx, now_ms)
    pushed = 0
    for user_id in await _users_owing(ctx):
        try:
            pushed += await writes.repair(ctx, user_id, now_ms, older_than_ms=join_grace_ms)
        except (RedisError, RedisClusterException):
            log.exception("repairing %s failed; the next sweep retries", user_id)
    for step in steps:
        repaired = await step(ctx, now_ms)
        if repaired:
            log.warning("%s: finished %d piece(s) of interrupted work", _name(step), repaired)
    return pushed


def _name(step: Step) -> str:
    return f"{getattr(step, '__module__', '')}.{getattr(step, '__qualname__', step)}"


async def _users_owing(ctx: AppContext) -> list[str]:
    # A plain SCAN loop, not `scan_iter`: an async generator cancelled half-way (the
    # service stopping mid-sweep) would be finalised later on a closed connection.
    pattern = ctx.keys.user_pattern("owed")
    users: set[str] = set()
    clients = ctx.r.get_primaries() if hasattr(ctx.r, "get_primaries") else [None]
    for node in clients:
        cursor: Any = 0
        while True:
            if node is None:
                cursor, keys = await ctx.r.scan(cursor, match=pattern, count=1000)
            else:
                # A cluster answers one cursor per node it asked: {node name: cursor}.
                cursors, keys = await ctx.r.scan(
                    cursor, match=pattern, count=1000, target_nodes=node
                )
                cursor = cursors[node.name]
            users.update(ctx.keys.user_of(str(k)) for k in keys)
            if not cursor:
                break
    return sorted(users)


async def _leased_sweep(ctx: AppContext, steps: Sequence[Step]) -> None:
    lease_ms = max(1000, int(ctx.settings.sweep_seconds * 1000) - 500)
    if not await ctx.r.set(ctx.keys.lease("sweep"), "1", nx=True, px=lease_ms):
        return
    pushed = await run_once(ctx, steps=steps)
    if pushed:
        # Most are days of syncs still under way (the push is idempotent, so racing them
        # costs a little work and changes nothing); only a few come from a dead request.
        log.info("pushed %d owed day(s): of syncs under way or cut short", pushed)


async def loop(ctx: AppContext, steps: Sequence[Step] = ()) -> None:
    """Sweep now, then every `sweep_seconds`, until cancelled."""
    while True:
        try:
            await _leased_sweep(ctx, steps)
        except (RedisError, RedisClusterException) as exc:  # down: the next round retries
            log.warning("sweep skipped: %s", exc)
        except Exception:
            log.exception("sweep failed")
        await asyncio.sleep(ctx.settings.sweep_seconds)


async def stop(task: asyncio.Task[Any]) -> None:
    """Cancel and wait; cancel again if something inside swallowed the first one."""
    while not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=1.0)
    with contextlib.suppress(asyncio.CancelledError, Exception):
        task.result()
