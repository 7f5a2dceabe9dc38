from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from healthcomp.competitions.access import organizer_of
from healthcomp.core.deps import Ctx, CurrentPrincipal
from healthcomp.core.keys import ID_PATTERN
from healthcomp.core.responses import Envelope, JSONBytes, ok
from healthcomp.leaderboard import service
from healthcomp.leaderboard.schemas import (
    Id,
    Leaderboard,
    ScoreUpdate,
    ScoreUpdateResult,
    UserCompetitions,
)

router = APIRouter(tags=["leaderboard"])

Limit = Annotated[int, Query(ge=1, le=1000)]
Offset = Annotated[int, Query(ge=0, le=10_000_000)]


@router.get(
    "/leaderboard/{competition_id}",
    response_model=Envelope[Leaderboard],
    summary="Ranked entries, a page or a window around a participant",
    description=(
        "Standard competition ranking (1, 2, 2, 4); within a tie whoever reached the "
        "score first is listed first. `around=me` (or a user id) centres a window of "
        "`limit` entries on that participant. `me` is the caller's own entry. A private "
        "competition's board is for its participants, its organizer and the service role; "
        "a public one's for any signed-in user. `event_id` is the board's version: open the "
        "WebSocket with `?since=<event_id>` to miss nothing after this page."
    ),
)
async def get_leaderboard(
    ctx: Ctx,
    principal: CurrentPrincipal,
    competition_id: Id,
    limit: Limit = 100,
    offset: Offset = 0,
    around: Annotated[
        str | None, Query(description="`me` or a user id", pattern=ID_PATTERN)
    ] = None,
) -> JSONBytes:
    body = await service.board(
        ctx, principal, competition_id, limit=limit, offset=offset, around=around
    )
    return JSONBytes(body)


@router.get(
    "/competitions/{competition_id}/participants",
    response_model=Envelope[Leaderboard],
    tags=["competitions"],
    summary="Participants in rank order (participants, organizer, service)",
)
async def participants(
    ctx: Ctx,
    principal: CurrentPrincipal,
    competition_id: Id,
    limit: Limit = 100,
    offset: Offset = 0,
) -> JSONBytes:
    body = await service.board(
        ctx, principal, competition_id, limit=limit, offset=offset, members_only=True
    )
    return JSONBytes(body)


@router.post(
    "/leaderboard/update",
    response_model=Envelope[ScoreUpdateResult],
    summary="Trusted score write (organizer or service)",
    description=(
        "Sets the participant's competition totals to these absolute values, kept as an "
        "audited adjustment over the activity-derived totals: later syncs still count. "
        "On a goal competition `goal_days` sets the number of goal days. An organizer "
        "cannot set their own entry, and with money involved (an entry fee or a prize "
        "pool) or after the sync deadline only the service role writes."
    ),
)
async def update_score(ctx: Ctx, principal: CurrentPrincipal, body: ScoreUpdate) -> JSONBytes:
    stored = await organizer_of(ctx, principal, body.competition_id)
    return ok(await service.set_totals(ctx, principal, stored, body), "Score updated.")


@router.get(
    "/users/{user_id}/competitions",
    response_model=Envelope[UserCompetitions],
    tags=["users"],
    summary="The user's competitions with score and rank (self or service)",
)
async def user_competitions(
    ctx: Ctx, principal: CurrentPrincipal, user_id: Annotated[str, Path(pattern=ID_PATTERN)]
) -> JSONBytes:
    principal.require_self_or_service(user_id)
    return ok({"user_id": user_id, "competitions": await service.standings_of(ctx, user_id)})
