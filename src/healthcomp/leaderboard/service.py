"""Leaderboard views and the trusted score write (SPEC §6.3)."""

from __future__ import annotations

from typing import Any

import orjson

from healthcomp.competitions import repo as competitions_repo
from healthcomp.competitions import service as competitions
from healthcomp.core.auth import Principal
from healthcomp.core.clock import from_ms, to_ms
from healthcomp.core.context import AppContext
from healthcomp.core.errors import Conflict, NotFound, ValidationFailed
from healthcomp.leaderboard import repo
from healthcomp.leaderboard.repo import METRIC_NAMES
from healthcomp.leaderboard.schemas import ScoreUpdate


def _ms(value: Any) -> str | None:
    return from_ms(int(value)) if value else None


def entry_view(cid: str, row: repo.Row) -> dict[str, Any]:
    e = row.entry
    return {
        "user_id": row.user_id,
        "user_name": row.name,
        "competition_id": cid,
        "score": row.score,
        "rank": row.rank,
        **row.totals(),
        "last_synced_at": _ms(e.get("ls")),
        "updated_at": _ms(e.get("u")),
        "joined_at": _ms(e.get("j")),
    }


async def leaderboard(
    ctx: AppContext,
    principal: Principal,
    cid: str,
    *,
    limit: int,
    offset: int,
    around: str | None,
) -> dict[str, Any]:
    if around == "me":
        if principal.user_id is None:
            raise ValidationFailed("around=me needs a user token; name a user_id instead.")
        around = principal.user_id
    page = await repo.page(
        ctx, cid, offset=offset, limit=limit, around=around, caller=principal.user_id
    )
    if page is None:
        raise NotFound(f"'{around}' is not on this leaderboard.", error="participant_not_found")
    return board_view(cid, page, limit)


def board_view(cid: str, page: repo.Page, limit: int) -> dict[str, Any]:
    return {
        "competition_id": cid,
        "entries": [entry_view(cid, row) for row in page.rows],
        "total_count": page.total,
        "offset": page.start,
        "limit": limit,
        "me": entry_view(cid, page.caller) if page.caller else None,
        "updated_at": _ms(page.updated_ms),
    }


_CODES = {
    -1: ("participant_not_found", "is not a participant of this competition"),
    -2: ("competition_not_found", "no such competition"),
    -3: ("competition_closed", "the competition is closed"),
}


async def set_totals(ctx: AppContext, principal: Principal, body: ScoreUpdate) -> dict[str, Any]:
    stored = await competitions.get(ctx, body.competition_id)
    competitions.require_organizer(stored, principal)
    values = [
        body.steps,
        None if body.distance is None else round(body.distance),
        None if body.calories is None else round(body.calories),
        body.active_minutes,
    ]
    if all(v is None for v in values):
        raise ValidationFailed("Give at least one of steps, distance, calories, active_minutes.")
    now_ms = to_ms(ctx.clock.now())
    actor = principal.user_id or "service"
    res = await repo.set_totals(
        ctx, body.competition_id, body.user_id, now_ms, actor, body.reason, values
    )
    if len(res) == 1:
        code, message = _CODES[int(res[0])]
        if code == "participant_not_found":
            raise NotFound(f"'{body.user_id}' {message}.", error=code)
        if code == "competition_not_found":
            raise NotFound(message.capitalize() + ".", error=code)
        raise Conflict(message.capitalize() + ".", error=code)
    page = await repo.page(
        ctx, body.competition_id, limit=1, around=body.user_id, caller=body.user_id
    )
    assert page is not None and page.caller is not None
    before, after = orjson.loads(res[3]), orjson.loads(res[4])
    return {
        "entry": entry_view(body.competition_id, page.caller),
        "previous_rank": int(res[2]),
        "before": dict(zip(METRIC_NAMES, before, strict=True)),
        "after": dict(zip(METRIC_NAMES, after, strict=True)),
    }


async def standings_of(ctx: AppContext, user_id: str) -> list[dict[str, Any]]:
    now = ctx.clock.now()
    ids = await competitions_repo.user_competition_ids(ctx, user_id)
    out: list[dict[str, Any]] = []
    for stored in await competitions_repo.load_many(ctx, ids):
        if stored is None:
            continue
        standing = await repo.standing(ctx, stored.id, user_id)
        if standing is None:
            continue
        out.append(
            {
                "competition_id": stored.id,
                "name": stored.doc["name"],
                "metric": stored.doc["metric"],
                "status": stored.status(now),
                "score": standing.score,
                "rank": standing.rank,
                "gap_to_next_rank": standing.gap_to_next,
                "participant_count": stored.participant_count,
                "start_date": stored.doc["start_date"],
                "end_date": stored.doc["end_date"],
            }
        )
    return out
