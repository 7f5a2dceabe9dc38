"""A user's daily records (per source) and effective days."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import orjson

from healthcomp.activity import scripts
from healthcomp.core.context import AppContext


@dataclass(frozen=True)
class Push:
    """One effective day to push into one competition."""

    competition_id: str
    day: str
    seq: int
    ver: int
    values: tuple[int, int, int, int]


async def write(
    ctx: AppContext,
    user_id: str,
    now_ms: int,
    records: Sequence[tuple[str, str, tuple[int, int, int, int]]],
    targets: Sequence[tuple[str, str, str]],
) -> list[Push]:
    """Store records (day, source, values) and mark the (competition, day range) targets."""
    k = ctx.keys
    args: list[Any] = [now_ms, len(records)]
    for day, source, values in records:
        args.extend([day, source, *values])
    args.append(len(targets))
    for target in targets:
        args.extend(target)
    keys = [k.records(user_id), k.effective(user_id), k.user_dirty(user_id)]
    flat = await scripts.SYNC(ctx, keys, args)
    return [
        Push(
            str(flat[i]),
            str(flat[i + 1]),
            int(flat[i + 2]),
            int(flat[i + 3]),
            (int(flat[i + 4]), int(flat[i + 5]), int(flat[i + 6]), int(flat[i + 7])),
        )
        for i in range(0, len(flat), 8)
    ]


async def clear(ctx: AppContext, user_id: str, done: Sequence[Push]) -> None:
    if not done:
        return
    args: list[Any] = []
    for push in done:
        args.extend([f"{push.competition_id}|{push.day}", push.seq])
    await scripts.CLEAR(ctx, [ctx.keys.user_dirty(user_id)], args)


async def effective_days(ctx: AppContext, user_id: str) -> dict[str, dict[str, Any]]:
    raw = cast(dict[str, str], await ctx.r.hgetall(ctx.keys.effective(user_id)))
    return {day: orjson.loads(value) for day, value in raw.items()}


async def source_records(ctx: AppContext, user_id: str) -> dict[str, str]:
    return cast(dict[str, str], await ctx.r.hgetall(ctx.keys.records(user_id)))


async def user_exists(ctx: AppContext, user_id: str) -> bool:
    k = ctx.keys
    pipe = ctx.r.pipeline(transaction=False)
    pipe.exists(k.profile(user_id))
    pipe.exists(k.effective(user_id))
    pipe.exists(k.user_competitions(user_id))
    return any(await pipe.execute())
