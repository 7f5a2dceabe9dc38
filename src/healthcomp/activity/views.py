"""Stats and history (SPEC §6.4): who may look, and the views, from the user's days."""

from __future__ import annotations

import asyncio
from datetime import date, timedelta
from typing import Any

from healthcomp.activity import service, stats
from healthcomp.activity.service import EARLIEST_DAY
from healthcomp.analytics import service as analytics
from healthcomp.competitions import access
from healthcomp.competitions.model import Stored
from healthcomp.core.auth import Principal
from healthcomp.core.clock import from_ms
from healthcomp.core.context import AppContext
from healthcomp.core.errors import Forbidden, NotFound, ValidationFailed
from healthcomp.engine import reads
from healthcomp.engine.flags import record_kinds
from healthcomp.engine.model import METRIC_NAMES
from healthcomp.leaderboard import service as leaderboard

MAX_HISTORY_DAYS = 366


def _day(name: str, value: str | None) -> date | None:
    """A calendar day given as YYYY-MM-DD (nothing else: no timestamps, no numbers)."""
    if value is None:
        return None
    try:
        day = date.fromisoformat(value)
    except ValueError:
        raise ValidationFailed(
            f"'{name}' is not a calendar day.",
            details=[
                {"field": name, "message": "not a valid YYYY-MM-DD day", "type": "value_error"}
            ],
        ) from None
    if day < EARLIEST_DAY:  # no activity is kept before it (SPEC §6.1)
        raise ValidationFailed(
            f"'{name}' is before {EARLIEST_DAY}, the first day activity is kept for.",
            details=[{"field": name, "message": f"before {EARLIEST_DAY}", "type": "value_error"}],
        )
    return day


async def check_access(
    ctx: AppContext, principal: Principal, user_id: str, competition_id: str | None
) -> Stored | None:
    """Self or service; through a competition, also its co-participants and organizer.

    Returns the competition looked through, if one was named. Someone who cannot see
    the competition, or sees it but the user is not in it, gets a 404 either way: nobody
    learns who takes part where.
    """
    if competition_id is not None:
        stored = await access.get(ctx, competition_id)
        if not await access.is_member(ctx, stored, principal):
            await access.refuse(
                ctx,
                stored,
                principal,
                Forbidden(
                    "Only participants and the organizer may see this.", error="not_participant"
                ),
            )
        if not await reads.is_participant(ctx, competition_id, user_id):
            raise NotFound(
                f"'{user_id}' does not take part in '{competition_id}'.",
                error="participant_not_found",
            )
        return stored
    principal.require_self_or_service(user_id)
    if not await reads.user_exists(ctx, user_id):
        raise NotFound(f"No user '{user_id}'.", error="user_not_found")
    return None


async def stats_view(
    ctx: AppContext,
    principal: Principal,
    user_id: str,
    competition_id: str | None,
    step_goal: int | None,
) -> dict[str, Any]:
    stored = await check_access(ctx, principal, user_id, competition_id)
    # Pushing what an interrupted sync left owed changes scores, not the user's days:
    # the days and the list of competitions are read meanwhile; the standings after.
    _, effective, ids = await asyncio.gather(
        service.repair(ctx, user_id),
        reads.effective_days(ctx, user_id),
        reads.competitions_of(ctx, user_id),
    )
    goal = step_goal or ctx.settings.step_goal
    today = ctx.clock.today()
    days = stats.parse_days(effective)
    data: dict[str, Any] = {"user_id": user_id}
    if stored is not None:
        competition_id = stored.id
        window = {d: v for d, v in days.items() if stored.start <= d <= stored.end}
        standing = await reads.standing(ctx, competition_id, user_id)
        assert standing is not None
        projected = await analytics.projected(ctx, stored, user_id)
        last = min(today, stored.end)
        data.update(stats.summary(window, goal, last))
        data["competition"] = {
            "competition_id": competition_id,
            "metric": stored.doc["metric"],
            "score": standing.score,
            "rank": standing.rank,
            "disqualified": standing.rank is None,
            "gap_to_next_rank": standing.gap_to_next,
            "participant_count": stored.participant_count,
            "projected_final_score": projected.expected if projected else None,
            "projected_final_rank": projected.rank if projected else None,
            "start_date": stored.doc["start_date"],
            "end_date": stored.doc["end_date"],
        }
    else:
        data.update(stats.summary(days, goal, today))
        data["competitions"] = await leaderboard.standings_of(ctx, user_id, ids)
    return data


async def history_view(
    ctx: AppContext,
    principal: Principal,
    user_id: str,
    from_: str | None,
    to: str | None,
    competition_id: str | None,
) -> dict[str, Any]:
    stored = await check_access(ctx, principal, user_id, competition_id)
    last = _day("to", to) or ctx.clock.today()
    first = _day("from", from_) or last - timedelta(days=29)
    if first > last:
        raise ValidationFailed(
            "'from' must not be after 'to'.",
            details=[{"field": "from", "message": "after 'to'", "type": "value_error"}],
        )
    if (last - first).days + 1 > MAX_HISTORY_DAYS:
        raise ValidationFailed(
            f"A history range covers at most {MAX_HISTORY_DAYS} days.",
            details=[{"field": "from", "message": "range too long", "type": "value_error"}],
        )
    if stored is not None:
        # Seen through a competition: only that competition's days.
        first, last = max(first, stored.start), min(last, stored.end)
    effective = await reads.effective_days(ctx, user_id)
    # Per-source records are the user's own: another participant or the organizer sees
    # the effective values of the window's days only.
    own = principal.is_service or principal.user_id == user_id
    sources = await reads.source_records(ctx, user_id)
    per_day: dict[str, dict[str, Any]] = {}
    for field, value in sources.items():
        day, source = field.split("|", 1)
        if not first.isoformat() <= day <= last.isoformat():
            continue
        parts = [int(x) for x in value.split(",")]
        per_day.setdefault(day, {})[source] = {
            **dict(zip(METRIC_NAMES, parts[:4], strict=True)),
            "synced_at": from_ms(parts[4]),
        }
    days = []
    for day in sorted(per_day):
        eff = effective.get(day)
        values = eff["v"] if eff else [0, 0, 0, 0]
        days.append(
            {
                "date": day,
                **dict(zip(METRIC_NAMES, values, strict=True)),
                "sources": per_day[day] if own else {},
                "last_synced_at": from_ms(int(eff["t"])) if eff else None,
                # What the record's own checks found (docs/ANALYTICS.md §4): the user's.
                "flags": record_kinds(int(eff.get("f") or 0), eff.get("fm")) if eff and own else [],
            }
        )
    return {"user_id": user_id, "from": first.isoformat(), "to": last.isoformat(), "days": days}
