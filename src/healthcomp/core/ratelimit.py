"""Per-user and per-IP rate limits, shared by every process through Redis.

GCRA (the generic cell rate algorithm): one key per subject holding the "theoretical
arrival time" (TAT). A limit of N requests per period P with a burst of B lets B
through at once, then one every P/N. Users: 300 a minute after a burst of 100 by
default (a phone app's flurry fits; hundreds a second do not); addresses: the limit
as the burst. The script runs on the Redis server's clock, so hosts with skewed
clocks agree, and touches one key, so it runs anywhere in a cluster.

* **Per IP** (`check`): one round trip, taken only by requests that carry no valid
  token, so a flood of guessed tokens is throttled; signed-in users behind one carrier
  NAT address do not share a budget (SPEC §4).
* **Per user** (`UserBudgets`): the hot path makes no round trip for it. Each process
  keeps a mirror of every active user's TAT and decides locally; a flusher sends what
  each user spent to Redis every `HC_RATE_LIMIT_SYNC_MS` (one pipeline for all users)
  and takes back the shared TAT, which includes what the other processes spent; a
  user past half their burst here is read back at every flush even when idle here. A
  user's first request in a process (or after a minute idle) reads the shared state
  first. Accuracy: with one process the limit is exact. With P processes a process
  notices the others' spending within one flush once the user is past half the burst
  in its view, so a user can get at most about (P - 1) half-bursts plus one flush
  interval of requests beyond the limit, and that excess is charged to the shared
  state, so the long-run rate holds exactly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisClusterException, RedisError

from healthcomp.core.auth import Principal
from healthcomp.core.context import AppContext
from healthcomp.core.errors import AppError, datastore_unavailable
from healthcomp.core.lua import Call, Lua, run_many

log = logging.getLogger("healthcomp.ratelimit")

# KEYS: the subject's key; ARGV: emission interval (us), burst tolerance (us), n, strict
# -> {wait_us, ahead_us}. Strict (a check): wait > 0 refuses without charging. Not
# strict (a flush of requests already admitted): always charges n. `ahead` is how far
# the TAT is past the server's now afterwards.
_GCRA = Lua(
    "core.gcra",
    """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval, tolerance = tonumber(ARGV[1]), tonumber(ARGV[2])
local n, strict = tonumber(ARGV[3]), ARGV[4] == '1'
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local wait = tat - tolerance - now
if (strict and wait > 0) or n == 0 then
  return {string.format('%.0f', math.max(wait, 0)), string.format('%.0f', tat - now)}
end
local new_tat = tat + n * interval
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX',
           math.ceil((new_tat - now) / 1000) + 1)
return {'0', string.format('%.0f', new_tat - now)}
""",
)

IDLE_FORGET_US = 60_000_000  # a mirror idle this long past its TAT is dropped
MAX_MIRRORS = 100_000


class RateLimited(AppError):
    status = 429
    error = "rate_limited"


def _limited(kind: str, wait_us: float) -> RateLimited:
    seconds = max(1, math.ceil(wait_us / 1_000_000))
    who = "this account" if kind == "user" else "this address"
    return RateLimited(
        f"Too many requests from {who}; try again in {seconds} s.",
        headers={"Retry-After": str(seconds)},
    )


def _params(per_minute: int, burst: int | None = None) -> tuple[int, int]:
    """GCRA's emission interval and tolerance (µs) for `per_minute` requests sustained
    and a burst of `burst` at once (at most `per_minute`; all of it when None)."""
    interval = 60_000_000 // per_minute
    size = per_minute if burst is None else max(1, min(burst, per_minute))
    return interval, (size - 1) * interval


async def check(ctx: AppContext, kind: str, subject: str, per_minute: int) -> None:
    """Raise 429 with Retry-After when `subject` is over `per_minute` requests; one
    round trip (the per-IP limit)."""
    if per_minute <= 0:
        return
    taken = await _take(ctx, kind, subject, *_params(per_minute))
    if taken is not None and taken[0] > 0:
        raise _limited(kind, taken[0])


async def spend(ctx: AppContext, principal: Principal) -> None:
    """Count a request of a signed-in user against their limit (429 when over); the
    service role has none."""
    if principal.user_id is not None and ctx.limits is not None:
        await ctx.limits.spend(principal.user_id)


async def _take(
    ctx: AppContext, kind: str, subject: str, interval: int, tolerance: int
) -> tuple[int, int] | None:
    """One step of the shared bucket, charged only when allowed: (µs to wait, µs the
    arrival time is ahead of now). None when Redis failed: the request goes through."""
    try:
        res: Any = await _GCRA(ctx, [ctx.keys.rate(kind, subject)], [interval, tolerance, 1, "1"])
    except (RedisError, RedisClusterException) as exc:
        # Fail open: an unreachable or refusing datastore is answered by the route itself
        # (a write gets 503, a read-only replica still serves reads), and must not turn a
        # 401 into a 503. The step is never re-sent after it went out (core/redis.py), so
        # a lost reply does not charge the request twice.
        if not datastore_unavailable(exc):
            log.error("rate-limit check failed; the request goes through", exc_info=exc)
        return None
    return int(res[0]), int(res[1])


def _now_us() -> float:
    return time.monotonic() * 1_000_000


@dataclass
class _Mirror:
    tat: float  # local monotonic µs
    pending: int = 0  # admitted here, not yet sent to Redis


class UserBudgets:
    """The per-user limit, decided locally and reconciled with Redis (see the module)."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.per_minute = ctx.settings.rate_limit_user_per_minute
        burst = ctx.settings.rate_limit_user_burst
        self.interval, self.tolerance = (
            _params(self.per_minute, burst) if self.per_minute else (0, 0)
        )
        self.sync_seconds = ctx.settings.rate_limit_sync_ms / 1000
        self.mirrors: dict[str, _Mirror] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.per_minute > 0:
            self._task = asyncio.create_task(self._loop(), name="rate-limit-flush")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(RedisError, RedisClusterException, OSError):
            await self.flush()

    async def spend(self, user_id: str) -> None:
        """Count one request; raise 429 when the user is over the limit."""
        if self.per_minute <= 0:
            return
        mirror = self.mirrors.get(user_id)
        if mirror is None:
            await self._prime(user_id)  # decides and charges this request
            return
        now = _now_us()
        tat = mirror.tat if mirror.tat > now else now
        wait = tat - self.tolerance - now
        if wait > 0:
            raise _limited("user", wait)
        mirror.tat = tat + self.interval
        mirror.pending += 1

    async def _prime(self, user_id: str) -> None:
        """A user new to this process: the shared state decides (and charges) this
        request, then the mirror follows it."""
        taken = await _take(self.ctx, "user", user_id, self.interval, self.tolerance)
        if taken is None:
            return
        wait, ahead = taken
        if len(self.mirrors) >= MAX_MIRRORS:
            self._forget_idle(force=True)
        self.mirrors.setdefault(user_id, _Mirror(_now_us() + ahead))
        if wait > 0:
            raise _limited("user", wait)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.sync_seconds)
            try:
                await self.flush()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the flusher must keep running
                if not datastore_unavailable(exc):
                    log.error("rate-limit flush failed", exc_info=exc)
            self._forget_idle()

    async def flush(self) -> None:
        """Send every user's spending since the last flush; take back the shared TAT."""
        # Spending to send, and users near their limit to read back (n = 0).
        near = _now_us() + self.tolerance / 2
        spent = [(u, m.pending) for u, m in self.mirrors.items() if m.pending or m.tat > near]
        if not spent:
            return
        for user, n in spent:
            self.mirrors[user].pending -= n
        calls: list[Call] = [
            (_GCRA, [self.ctx.keys.rate("user", user)], [self.interval, self.tolerance, n, "0"])
            for user, n in spent
        ]
        try:
            replies = await run_many(self.ctx, calls)
        except BaseException:
            # Not sent, or its reply lost: charged at the next flush (erring strict).
            for user, n in spent:
                mirror = self.mirrors.get(user)
                if mirror is not None:
                    mirror.pending += n
            raise
        now = _now_us()
        for (user, n), reply in zip(spent, replies, strict=True):
            mirror = self.mirrors.get(user)
            if mirror is None:
                continue
            if isinstance(reply, BaseException):
                mirror.pending += n
                continue
            # What this process admitted while the flush was out stays on top.
            mirror.tat = now + int(reply[1]) + mirror.pending * self.interval

    def _forget_idle(self, force: bool = False) -> None:
        horizon = _now_us() - (0 if force else IDLE_FORGET_US)
        stale = [u for u, m in self.mirrors.items() if not m.pending and m.tat < horizon]
        for user in stale:
            del self.mirrors[user]
