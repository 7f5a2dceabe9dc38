from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from healthcomp.core.deps import Ctx, CurrentPrincipal
from healthcomp.core.responses import Envelope, JSONBytes, ok
from healthcomp.leaderboard import service
from healthcomp.leaderboard.schemas import Id, Leaderboard, ScoreUpdate, ScoreUpdateResult

router = APIRouter(prefix="/leaderboard", tags=["leaderboard"])


@router.get(
    "/{competition_id}",
    response_model=Envelope[Leaderboard],
    summary="Ranked entries, a page or a window around a participant",
    description=(
        "Standard competition ranking (1, 2, 2, 4); within a tie whoever reached the "
        "score first is listed first. `around=me` (or a user id) centres a window of "
        "`limit` entries on that participant. `me` is the caller's own entry."
    ),
)
async def get_leaderboard(
    ctx: Ctx,
    principal: CurrentPrincipal,
    competition_id: Id,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    around: Annotated[
        str | None, Query(description="`me` or a user id", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    ] = None,
) -> JSONBytes:
    board = await service.leaderboard(
        ctx, principal, competition_id, limit=limit, offset=offset, around=around
    )
    return ok(board)


@router.post(
    "/update",
    response_model=Envelope[ScoreUpdateResult],
    summary="Trusted score write (organizer or service)",
    description=(
        "Sets the participant's competition totals to these absolute values, kept as an "
        "audited adjustment over the activity-derived totals: later syncs still count."
    ),
)
async def update_score(ctx: Ctx, principal: CurrentPrincipal, body: ScoreUpdate) -> JSONBytes:
    return ok(await service.set_totals(ctx, principal, body), "Score updated.")
