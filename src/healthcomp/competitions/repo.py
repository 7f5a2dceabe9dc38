"""Competition storage: the `meta` hash, the listing index, membership scripts."""

from __future__ import annotations

from typing import Any, cast

import orjson

from healthcomp.competitions import scripts
from healthcomp.competitions.model import Stored, meta_fields
from healthcomp.core.context import AppContext

_META_READ = ("doc", "state")


async def load(ctx: AppContext, competition_id: str) -> Stored | None:
    k = ctx.keys
    pipe = ctx.r.pipeline(transaction=False)
    pipe.hmget(k.meta(competition_id), list(_META_READ))
    pipe.zcard(k.board(competition_id))
    (doc, state), count = await pipe.execute()
    if doc is None:
        return None
    return Stored(orjson.loads(doc), str(state), int(count))


async def load_many(ctx: AppContext, ids: list[str]) -> list[Stored | None]:
    if not ids:
        return []
    k = ctx.keys
    pipe = ctx.r.pipeline(transaction=False)
    for cid in ids:
        pipe.hmget(k.meta(cid), list(_META_READ))
        pipe.zcard(k.board(cid))
    raw = await pipe.execute()
    out: list[Stored | None] = []
    for i in range(0, len(raw), 2):
        doc, state = raw[i]
        out.append(None if doc is None else Stored(orjson.loads(doc), str(state), int(raw[i + 1])))
    return out


async def create(ctx: AppContext, doc: dict[str, Any], created_ms: int) -> bool:
    k = ctx.keys
    cid = doc["id"]
    # The index first: a crash after it leaves an id the listing skips, never a
    # competition that cannot be listed.
    await ctx.r.zadd(k.competitions(), {cid: created_ms}, nx=True)
    flat = [x for pair in meta_fields(doc).items() for x in pair]
    created = bool(await scripts.CREATE(ctx, [k.meta(cid)], flat))
    return created


async def replace_doc(ctx: AppContext, old_doc: dict[str, Any], doc: dict[str, Any]) -> int:
    flat = [x for pair in meta_fields(doc).items() for x in pair]
    expected = orjson.dumps(old_doc).decode()
    return int(await scripts.UPDATE(ctx, [ctx.keys.meta(doc["id"])], [expected, *flat]))


async def list_ids(ctx: AppContext, start: int, count: int) -> list[str]:
    ids = await ctx.r.zrevrange(ctx.keys.competitions(), start, start + count - 1)
    return cast(list[str], ids)


async def count_all(ctx: AppContext) -> int:
    return int(await ctx.r.zcard(ctx.keys.competitions()))


async def join(ctx: AppContext, cid: str, user_id: str, now_ms: int, name: str) -> int:
    k = ctx.keys
    # The user's index first (a superset is harmless: the competition is the truth).
    await ctx.r.sadd(k.user_competitions(user_id), cid)
    keys = [k.meta(cid), k.board(cid), k.entries(cid), k.names(cid)]
    result = int(await scripts.JOIN(ctx, keys, [user_id, now_ms, name]))
    if result < 0 and result != -5:
        await ctx.r.srem(k.user_competitions(user_id), cid)
    return result


async def leave(ctx: AppContext, cid: str, user_id: str, now_ms: int) -> int:
    k = ctx.keys
    keys = [
        k.meta(cid),
        k.board(cid),
        k.entries(cid),
        k.names(cid),
        k.participant_days(cid, user_id),
        k.adjustments(cid),
    ]
    result = int(await scripts.LEAVE(ctx, keys, [user_id, now_ms]))
    if result >= 0:
        await ctx.r.srem(k.user_competitions(user_id), cid)
    return result


async def cancel(ctx: AppContext, cid: str, now_ms: int, actor: str, reason: str) -> int:
    k = ctx.keys
    return int(await scripts.CANCEL(ctx, [k.meta(cid), k.audit(cid)], [now_ms, actor, reason]))


async def is_participant(ctx: AppContext, cid: str, user_id: str) -> bool:
    return bool(await ctx.r.hexists(ctx.keys.entries(cid), user_id))


async def user_competition_ids(ctx: AppContext, user_id: str) -> list[str]:
    members = await ctx.r.smembers(ctx.keys.user_competitions(user_id))
    return sorted(cast(set[str], members))


async def rename_everywhere(ctx: AppContext, user_id: str, name: str) -> None:
    """A new display name reaches every leaderboard the user is on."""
    for cid in await user_competition_ids(ctx, user_id):
        k = ctx.keys
        await scripts.RENAME(ctx, [k.entries(cid), k.names(cid)], [user_id, name])
