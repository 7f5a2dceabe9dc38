"""Leaderboard storage access: every read and write of `lb`, `entry`, `names`, `adj`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from healthcomp.core.context import AppContext
from healthcomp.core.errors import NotFound
from healthcomp.leaderboard import scripts

METRIC_NAMES = ("steps", "distance", "calories", "active_minutes")


@dataclass(frozen=True)
class Applied:
    code: int  # 0 ok; -1 not a participant, -2 gone, -3 closed, -4 past deadline
    score: int = 0
    rank: int = 0
    previous_rank: int = 0
    changed: bool = False


def _participant_keys(ctx: AppContext, cid: str, user_id: str) -> list[str]:
    k = ctx.keys
    return [
        k.meta(cid),
        k.board(cid),
        k.entries(cid),
        k.participant_days(cid, user_id),
        k.adjustments(cid),
    ]


async def apply_days(
    ctx: AppContext, cid: str, user_id: str, now_ms: int, days: Sequence[Sequence[Any]]
) -> Applied:
    """Push (day, ver, s, d, c, a) tuples of one participant into one competition."""
    keys = _participant_keys(ctx, cid, user_id)
    args: list[Any] = [user_id, now_ms, len(days)]
    for day in days:
        args.extend(day)
    res = await scripts.APPLY_DAYS(ctx, keys, args)
    if len(res) == 1:
        return Applied(int(res[0]))
    return Applied(0, int(res[0]), int(res[1]), int(res[2]), bool(res[3]))


@dataclass(frozen=True)
class Row:
    user_id: str
    score: int
    rank: int
    entry: dict[str, Any]
    name: str
    offsets: list[int]

    def totals(self) -> dict[str, int]:
        raw = self.entry.get("t", [0, 0, 0, 0])
        return {
            name: max(0, int(raw[i]) + int(self.offsets[i])) for i, name in enumerate(METRIC_NAMES)
        }


@dataclass(frozen=True)
class Page:
    total: int
    start: int
    updated_ms: int | None
    rows: list[Row]
    caller: Row | None


def _row(values: Sequence[Any]) -> Row:
    user, score, rank, entry, name, adj = values
    return Row(
        user_id=str(user),
        score=int(score),
        rank=int(rank),
        entry=orjson.loads(entry) if entry else {},
        name=str(name) if name else str(user),
        offsets=orjson.loads(adj) if adj else [0, 0, 0, 0],
    )


async def page(
    ctx: AppContext,
    cid: str,
    *,
    offset: int = 0,
    limit: int = 100,
    around: str | None = None,
    caller: str | None = None,
) -> Page | None:
    """One round trip: the ranked rows, their totals and names, and the caller's row.

    None when `around` names someone who is not on the board; NotFound when the
    competition does not exist.
    """
    k = ctx.keys
    keys = [k.board(cid), k.entries(cid), k.names(cid), k.adjustments(cid), k.meta(cid)]
    mode = "around" if around else "offset"
    res = await scripts.PAGE(ctx, keys, [mode, offset, limit, around or "", caller or ""])
    if len(res) == 1:
        if int(res[0]) == -2:
            raise NotFound(f"No competition '{cid}'.", error="competition_not_found")
        return None
    total, start, updated, n = int(res[0]), int(res[1]), res[2], int(res[3])
    rows = [_row(res[4 + i * 6 : 10 + i * 6]) for i in range(n)]
    tail = res[4 + n * 6 :]
    me = _row(tail[1:7]) if int(tail[0]) == 1 else None
    return Page(total, start, int(updated) if updated else None, rows, me)


@dataclass(frozen=True)
class Standing:
    score: int
    rank: int
    entry: dict[str, Any]
    gap_to_next: int | None


async def standing(ctx: AppContext, cid: str, user_id: str) -> Standing | None:
    k = ctx.keys
    res = await scripts.RANK_OF(ctx, [k.board(cid), k.entries(cid)], [user_id])
    if not res:
        return None
    score, rank, entry, gap = res
    return Standing(
        int(score), int(rank), orjson.loads(entry) if entry else {}, int(gap) if gap else None
    )


async def set_totals(
    ctx: AppContext,
    cid: str,
    user_id: str,
    now_ms: int,
    actor: str,
    reason: str,
    values: Sequence[int | None],
) -> list[Any]:
    k = ctx.keys
    keys = [k.meta(cid), k.board(cid), k.entries(cid), k.adjustments(cid), k.audit(cid)]
    args: list[Any] = [user_id, now_ms, actor, reason]
    for value in values:
        args.extend(["0", 0] if value is None else ["1", int(value)])
    res: list[Any] = await scripts.SET_TOTALS(ctx, keys, args)
    return res


async def audit_log(ctx: AppContext, cid: str, start: int = 0, stop: int = -1) -> list[Any]:
    raw = await ctx.r.lrange(ctx.keys.audit(cid), start, stop)
    return [orjson.loads(item) for item in raw]


async def participants(ctx: AppContext, cid: str, start: int, count: int) -> list[str]:
    ids = await ctx.r.zrange(ctx.keys.board(cid), start, start + count - 1)
    return [str(i) for i in ids]


async def reset(ctx: AppContext, cid: str, user_id: str, now_ms: int) -> None:
    await scripts.RESET(ctx, _participant_keys(ctx, cid, user_id), [user_id, now_ms])
