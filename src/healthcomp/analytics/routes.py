"""The analytics route (SPEC §5, §6.6)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from healthcomp.analytics import service
from healthcomp.analytics.schemas import Analytics
from healthcomp.competitions.access import MemberOf
from healthcomp.core.deps import Ctx, CurrentPrincipal
from healthcomp.core.responses import Envelope, JSONBytes, ok

router = APIRouter(prefix="/fitness", tags=["analytics"])


@router.get(
    "/analytics/{competition_id}",
    response_model=Envelope[Analytics],
    summary="Competition analytics: the field per day, scores, movers, projected finishes",
    description=(
        "Participants see the summary and their own projection (`me`); the organizer and "
        "the service role also get the flags and the disqualified participants. Computed "
        "from aggregates the board engine keeps as days arrive, cached against the board "
        "version: `event_id` is the last change it reflects. `limit` bounds the leaders "
        "and movers. Projections and the chance to win: docs/ANALYTICS.md."
    ),
)
async def analytics(
    ctx: Ctx,
    principal: CurrentPrincipal,
    stored: MemberOf,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
) -> JSONBytes:
    return ok(await service.view(ctx, principal, stored, limit=limit))
