"""Per-user and per-IP rate limits, shared by every process through Redis.

GCRA (the generic cell rate algorithm): one key per subject holding the "theoretical
arrival time". A limit of N requests per period P lets a burst of N through, then one
every P/N. Each check is one single-key script, so it runs anywhere in a cluster, and
uses the Redis server's clock, so hosts with skewed clocks agree.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from redis.exceptions import RedisClusterException, RedisError

from healthcomp.core.context import AppContext
from healthcomp.core.errors import AppError, datastore_unavailable
from healthcomp.core.lua import Lua

log = logging.getLogger("healthcomp.ratelimit")

# KEYS: the subject's key; ARGV: emission interval (us), burst tolerance (us)
# -> 0 when allowed, else the microseconds to wait
_GCRA = Lua(
    "core.gcra",
    """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval, tolerance = tonumber(ARGV[1]), tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local wait = tat - tolerance - now
if wait > 0 then return wait end
local new_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX',
           math.ceil((new_tat - now) / 1000) + 1)
return 0
""",
)


class RateLimited(AppError):
    status = 429
    error = "rate_limited"


async def check(ctx: AppContext, kind: str, subject: str, per_minute: int) -> None:
    """Raise 429 with Retry-After when `subject` is over `per_minute` requests."""
    if per_minute <= 0:
        return
    interval = 60_000_000 // per_minute
    tolerance = 60_000_000 - interval
    try:
        wait: Any = await _GCRA(ctx, [ctx.keys.rate(kind, subject)], [interval, tolerance])
    except (RedisError, RedisClusterException) as exc:
        # Fail open: an unreachable or refusing datastore is answered by the route itself
        # (a write gets 503, a read-only replica still serves reads), and must not turn a
        # 401 into a 503. The step is never re-sent after it went out (core/redis.py), so
        # a lost reply does not charge the request twice.
        if not datastore_unavailable(exc):
            log.error("rate-limit check failed; the request goes through", exc_info=exc)
        return
    if int(wait) > 0:
        seconds = max(1, math.ceil(int(wait) / 1_000_000))
        who = "this account" if kind == "user" else "this address"
        raise RateLimited(
            f"Too many requests from {who}; try again in {seconds} s.",
            headers={"Retry-After": str(seconds)},
        )
