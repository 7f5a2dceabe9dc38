"""The listing indexes: competitions by status, without reading every competition.

A competition's status follows the clock (upcoming → active → ended) or an action
(cancelled, finalized). The indexes keep one sorted set per status, for all
competitions and for the public ones, all in the `{ix}` slot. `advance(now)` moves the
competitions whose start or end has passed since the last call, so the work is
proportional to the transitions, not to the number of competitions; a clock that went
back more than five minutes (only a test clock does) rebuilds them from `times`.

Orders: `created` newest first, `upcoming` soonest start first, `active` soonest end
first, `ended` latest end first, `cancelled` and `finalized` latest first; ties by id.
"""

from __future__ import annotations

from typing import Any

from healthcomp.core.context import AppContext
from healthcomp.core.keys import LISTINGS
from healthcomp.core.lua import LUA_SPLIT, Lua

DESCENDING = frozenset({"created", "ended", "cancelled", "finalized"})

_PRELUDE = (
    LUA_SPLIT
    + """
local NAMES = {'created', 'upcoming', 'active', 'ended', 'cancelled', 'finalized'}
local function zkey(scope, name)
  for i, n in ipairs(NAMES) do
    if n == name then return KEYS[2 + (scope - 1) * 6 + i] end
  end
end
local function place(cid, rec, now)
  local p = split(rec)
  local starts, ends, state = tonumber(p[1]), tonumber(p[2]), p[3]
  local created, closed, pub = tonumber(p[4]), tonumber(p[5]), p[6] == '1'
  local status, score
  if state == 'cancelled' or state == 'finalized' then status, score = state, closed
  elseif now < starts then status, score = 'upcoming', starts
  elseif now < ends then status, score = 'active', ends
  else status, score = 'ended', ends end
  for s = 1, 2 do
    for i = 2, 6 do redis.call('ZREM', KEYS[2 + (s - 1) * 6 + i], cid) end
  end
  redis.call('ZADD', zkey(1, 'created'), created, cid)
  redis.call('ZADD', zkey(1, status), score, cid)
  if pub then
    redis.call('ZADD', zkey(2, 'created'), created, cid)
    redis.call('ZADD', zkey(2, status), score, cid)
  else
    redis.call('ZREM', zkey(2, 'created'), cid)
  end
end
local function advance(now)
  local asof = tonumber(redis.call('GET', KEYS[2]) or '0')
  if now < asof - 300000 then
    local all = redis.call('HGETALL', KEYS[1])
    for i = 1, #all, 2 do place(all[i], all[i + 1], now) end
  elseif now > asof then
    for _, name in ipairs({'upcoming', 'active'}) do
      for _, cid in ipairs(redis.call('ZRANGEBYSCORE', zkey(1, name), '-inf', now)) do
        place(cid, redis.call('HGET', KEYS[1], cid), now)
      end
    end
  else
    return
  end
  redis.call('SET', KEYS[2], string.format('%d', now))
end
"""
)

# KEYS: times, asof, all:*, pub:* ; ARGV: cid, record, now
_UPSERT = Lua(
    "competitions.index_upsert",
    _PRELUDE
    + """
advance(tonumber(ARGV[3]))
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
place(ARGV[1], ARGV[2], tonumber(ARGV[3]))
return 1
""",
)

# KEYS: times, asof, all:*, pub:* ; ARGV: now, scope (1 all, 2 pub), name, start, count,
#       descending -> {total, id, score, id, score, ...}
_RANGE = Lua(
    "competitions.index_range",
    _PRELUDE
    + """
advance(tonumber(ARGV[1]))
local key = zkey(tonumber(ARGV[2]), ARGV[3])
local first, last = tonumber(ARGV[4]), tonumber(ARGV[4]) + tonumber(ARGV[5]) - 1
local out = {redis.call('ZCARD', key)}
local items
if ARGV[6] == '1' then items = redis.call('ZREVRANGE', key, first, last, 'WITHSCORES')
else items = redis.call('ZRANGE', key, first, last, 'WITHSCORES') end
for _, x in ipairs(items) do out[#out + 1] = x end
return out
""",
)


def _keys(ctx: AppContext) -> list[str]:
    k = ctx.keys
    keys = [k.index("times"), k.index("asof")]
    for scope in ("all", "pub"):
        keys.extend(k.index(f"{scope}:{name}") for name in LISTINGS)
    return keys


def record(doc: dict[str, Any], *, starts_ms: int, ends_ms: int, state: str, closed_ms: int) -> str:
    public = "1" if doc.get("visibility") == "public" else "0"
    return f"{starts_ms}|{ends_ms}|{state}|{doc['created_ms']}|{closed_ms}|{public}"


async def upsert(ctx: AppContext, cid: str, rec: str, now_ms: int) -> None:
    await _UPSERT(ctx, _keys(ctx), [cid, rec, now_ms])


async def page(
    ctx: AppContext, *, public_only: bool, name: str, start: int, count: int, now_ms: int
) -> tuple[int, list[tuple[str, float]]]:
    """(total, [(id, sort score)]) of one listing, in its order."""
    args = [now_ms, 2 if public_only else 1, name, start, count, "1" if name in DESCENDING else "0"]
    res = await _RANGE(ctx, _keys(ctx), args)
    items = [(str(res[i]), float(res[i + 1])) for i in range(1, len(res), 2)]
    return int(res[0]), items


async def ids(ctx: AppContext, name: str) -> list[str]:
    """Every competition of one listing (`all:finalized`, `all:cancelled`, …), for jobs
    that visit them all (the payment worker); closed listings do not move with time."""
    return [str(cid) for cid in await ctx.r.zrange(ctx.keys.index(name), 0, -1)]


async def scores(ctx: AppContext, ids: list[str], name: str) -> dict[str, float]:
    """Each competition's sort score in the listing `name`, from the indexed times."""
    if not ids:
        return {}
    raw = await ctx.r.hmget(ctx.keys.index("times"), ids)
    field = {"created": 3, "upcoming": 0, "active": 1, "ended": 1}.get(name, 4)
    return {
        cid: float(str(rec).split("|")[field]) for cid, rec in zip(ids, raw, strict=True) if rec
    }


async def count_before(
    ctx: AppContext, *, public_only: bool, name: str, keys: list[tuple[float, str]]
) -> list[int]:
    """For each (score, id), how many of the listing come before it in its order."""
    key = ctx.keys.index(f"{'pub' if public_only else 'all'}:{name}")
    pipe = ctx.r.pipeline(transaction=False)
    for score, _ in keys:
        if name in DESCENDING:
            pipe.zcount(key, f"({score:.0f}", "+inf")
        else:
            pipe.zcount(key, "-inf", f"({score:.0f}")
    # Ties on the score are ordered by id; a tie with an own item is rare enough that
    # counting them by id in Python beats another round trip per item.
    for score, _ in keys:
        pipe.zrangebyscore(key, f"{score:.0f}", f"{score:.0f}")
    raw = await pipe.execute()
    n = len(keys)
    out = []
    for i, (_score, cid) in enumerate(keys):
        ties = [str(t) for t in raw[n + i]]
        if name in DESCENDING:
            out.append(int(raw[i]) + sum(1 for t in ties if t > cid))
        else:
            out.append(int(raw[i]) + sum(1 for t in ties if t < cid))
    return out


# --- closings under way ----------------------------------------------------------------
# A cancel or a distribution changes the competition (its slot) first and the listings
# (this slot) after: two steps that no script can join in a cluster. A marker written
# before the first and removed after the second lets the sweep finish the second for a
# process that died in between.

# KEYS: closing; ARGV: cid, cutoff -> 1 when removed
_UNMARK_IF_OLD = Lua(
    "competitions.unmark_if_old",
    """
local since = redis.call('ZSCORE', KEYS[1], ARGV[1])
if since and tonumber(since) <= tonumber(ARGV[2]) then
  return redis.call('ZREM', KEYS[1], ARGV[1])
end
return 0
""",
)


async def mark_closing(ctx: AppContext, cid: str, now_ms: int) -> None:
    await ctx.r.zadd(ctx.keys.index("closing"), {cid: now_ms})


async def unmark_closing(ctx: AppContext, cid: str, *, marked_before_ms: int | None = None) -> bool:
    """Remove the marker; with `marked_before_ms`, only one written at or before then
    (a later one belongs to a call still under way)."""
    key = ctx.keys.index("closing")
    if marked_before_ms is None:
        return bool(await ctx.r.zrem(key, cid))
    return bool(await _UNMARK_IF_OLD(ctx, [key], [cid, marked_before_ms]))


async def closing(ctx: AppContext) -> list[tuple[str, int]]:
    """The markers: (competition, ms), oldest first."""
    raw = await ctx.r.zrange(ctx.keys.index("closing"), 0, -1, withscores=True)
    return [(str(cid), int(ms)) for cid, ms in raw]
