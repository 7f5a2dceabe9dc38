"""Competition storage outside the engine: loading through it, the organizer's cap."""

from __future__ import annotations

from healthcomp.competitions.model import Stored
from healthcomp.core.context import AppContext
from healthcomp.core.lua import Lua
from healthcomp.engine import reads
from healthcomp.engine.codes import Reply, lua_constants


async def load(ctx: AppContext, competition_id: str) -> Stored | None:
    record = await reads.load(ctx, competition_id)
    return Stored.of(record) if record is not None else None


async def load_many(ctx: AppContext, ids: list[str]) -> list[Stored | None]:
    return [Stored.of(r) if r is not None else None for r in await reads.load_many(ctx, ids)]


# KEYS: org; ARGV: cid, ends_ms, now, maximum (0: none), keep ('1': a counted id keeps
# its end) -> {OK} | {TOO_MANY, open count}
# Counts and reserves in one step, so concurrent creates cannot pass the cap together.
_RESERVE = Lua(
    "competitions.reserve",
    lua_constants()
    + """
local open = redis.call('ZCOUNT', KEYS[1], '(' .. ARGV[3], '+inf')
local maximum = tonumber(ARGV[4])
local known = redis.call('ZSCORE', KEYS[1], ARGV[1])
if maximum > 0 and open >= maximum and not known then
  return {TOO_MANY, open}
end
if known and ARGV[5] == '1' then return {OK} end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
return {OK}
""",
)


async def reserve_organized(
    ctx: AppContext,
    user_id: str,
    cid: str,
    *,
    ends_ms: int,
    now_ms: int,
    maximum: int,
    keep: bool = False,
) -> int | None:
    """Count `cid` among the user's open competitions; the open count when over the cap.

    `keep` (a create): an id already counted keeps its end, so creating an id that
    exists (refused afterwards) neither reopens a cancelled one nor moves an end."""
    args = [cid, ends_ms, now_ms, maximum, "1" if keep else "0"]
    res = await _RESERVE(ctx, [ctx.keys.organized(user_id)], args)
    return int(res[1]) if Reply(int(res[0])) is Reply.TOO_MANY else None


async def release_organized(ctx: AppContext, user_id: str, cid: str) -> None:
    """Its creation failed: not the user's at all."""
    await ctx.r.zrem(ctx.keys.organized(user_id), cid)


async def close_organized(ctx: AppContext, user_id: str, cid: str) -> None:
    """Cancelled: still the user's, no longer open (an end of 0 is always past)."""
    await ctx.r.zadd(ctx.keys.organized(user_id), {cid: 0}, xx=True)


async def organized_ids(ctx: AppContext, user_id: str) -> list[str]:
    return sorted(str(c) for c in await ctx.r.zrange(ctx.keys.organized(user_id), 0, -1))
