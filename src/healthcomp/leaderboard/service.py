"""Leaderboard views, standings and the trusted score write (SPEC §6.3)."""

from __future__ import annotations

import asyncio
from typing import Any

from healthcomp.competitions import repo as competitions_repo
from healthcomp.competitions.model import Stored
from healthcomp.core.auth import Principal
from healthcomp.core.clock import to_ms
from healthcomp.core.context import AppContext
from healthcomp.core.errors import Conflict, Forbidden, NotFound, ValidationFailed
from healthcomp.engine import reads, writes
from healthcomp.engine.codes import Reply
from healthcomp.engine.model import METRIC_NAMES, Page, parse_row
from healthcomp.leaderboard.pages import Pages, entry_view
from healthcomp.leaderboard.schemas import ScoreUpdate


def pages_of(ctx: AppContext) -> Pages:
    """The worker's leaderboard pages (made on first use)."""
    return ctx.service("pages", Pages)


async def board(
    ctx: AppContext,
    principal: Principal,
    cid: str,
    *,
    limit: int,
    offset: int = 0,
    around: str | None = None,
    members_only: bool = False,
) -> bytes:
    """A page of the board as the whole response body. A private board is for its
    participants, organizer and the service role (others get the unknown-id 404);
    `members_only` (the participants list) refuses outsiders of a public one too."""
    return await pages_of(ctx).body(
        principal, cid, limit=limit, offset=offset, around=around, members_only=members_only
    )


_WRITE_ERRORS = {
    Reply.NO_COMPETITION: (NotFound, "competition_not_found", "No such competition."),
    Reply.CLOSED: (Conflict, "competition_closed", "The competition is closed."),
    Reply.SERVICE_ONLY: (
        Forbidden,
        "service_only",
        "This competition carries money: only the service role may set scores.",
    ),
    Reply.DISQUALIFIED: (
        Conflict,
        "participant_disqualified",
        "The participant is disqualified: reinstate them before setting their score.",
    ),
    Reply.PAST_DEADLINE: (
        Forbidden,
        "service_only",
        "The sync deadline has passed: only the service role may set scores now.",
    ),
}


async def set_totals(
    ctx: AppContext, principal: Principal, stored: Stored, body: ScoreUpdate
) -> dict[str, Any]:
    """Set a participant's totals (organizer or service). An organizer never sets their
    own entry, nor any entry in a competition with money, nor after the deadline."""
    if stored.organized_by(body.user_id) and not principal.is_service:
        raise Forbidden("An organizer cannot set their own entry.", error="own_entry")
    goal = stored.doc["format"] == "goal"
    if goal and body.goal_days is None:
        raise ValidationFailed(
            "A goal competition's score is its goal days: give goal_days.",
            details=[{"field": "goal_days", "message": "required here", "type": "missing"}],
        )
    if not goal and body.goal_days is not None:
        raise ValidationFailed(
            "goal_days is only for goal competitions.",
            details=[
                {"field": "goal_days", "message": "not a goal competition", "type": "value_error"}
            ],
        )
    values = [
        body.steps,
        None if body.distance is None else round(body.distance),
        None if body.calories is None else round(body.calories),
        body.active_minutes,
        body.goal_days,
    ]
    if all(v is None for v in values):
        raise ValidationFailed(
            "Give at least one of steps, distance, calories, active_minutes, goal_days."
        )
    written = await writes.set_totals(
        ctx,
        stored.id,
        body.user_id,
        now_ms=to_ms(ctx.clock.now()),
        actor=principal.user_id or "service",
        is_service=principal.is_service,
        reason=body.reason,
        values=values,
    )
    if written.code is Reply.NOT_PARTICIPANT:
        raise NotFound(
            f"'{body.user_id}' is not a participant of this competition.",
            error="participant_not_found",
        )
    if written.code is not Reply.OK:
        kind, error, message = _WRITE_ERRORS[written.code]
        raise kind(message, error=error)
    page = await reads.page(
        ctx, stored.id, caller=body.user_id, is_service=True, limit=1, around=body.user_id
    )
    assert isinstance(page, Page) and page.caller is not None
    assert written.before is not None and written.after is not None
    names = (*METRIC_NAMES, "goal_days")
    return {
        "entry": entry_view(stored.id, parse_row(page.caller)),
        "previous_rank": written.previous_rank,
        "before": dict(zip(names, written.before, strict=True)),
        "after": dict(zip(names, written.after, strict=True)),
        "event_id": written.event_id,
    }


async def standings_of(
    ctx: AppContext, user_id: str, ids: list[str] | None = None
) -> list[dict[str, Any]]:
    """The user's competitions (`ids`, read from the user's record when not given) with
    score and rank: two round trips whatever their number."""
    now = ctx.clock.now()
    if ids is None:
        ids = await reads.competitions_of(ctx, user_id)
    loaded, standings = await asyncio.gather(
        competitions_repo.load_many(ctx, ids), reads.standings(ctx, user_id, ids)
    )
    out: list[dict[str, Any]] = []
    for stored, standing in zip(loaded, standings, strict=True):
        if stored is None or standing is None:
            continue
        out.append(
            {
                "competition_id": stored.id,
                "name": stored.doc["name"],
                "metric": stored.doc["metric"],
                "status": stored.status(now),
                "score": standing.score,
                "rank": standing.rank,
                "disqualified": standing.rank is None,
                "gap_to_next_rank": standing.gap_to_next,
                "participant_count": stored.participant_count,
                "start_date": stored.doc["start_date"],
                "end_date": stored.doc["end_date"],
            }
        )
    return out
