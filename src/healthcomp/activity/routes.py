from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path, Query

from healthcomp.activity import service, views
from healthcomp.activity.schemas import Batch, History, Stats, SyncBody, SyncResult
from healthcomp.core.deps import Ctx, CurrentPrincipal
from healthcomp.core.keys import ID_PATTERN
from healthcomp.core.responses import Envelope, JSONBytes, ok

router = APIRouter(prefix="/fitness", tags=["activity"])

CompetitionQuery = Annotated[str | None, Query(pattern=ID_PATTERN)]
DAY_PATTERN = r"^\d{4}-\d{2}-\d{2}$"


@router.post(
    "/sync",
    response_model=Envelope[SyncResult],
    summary="Upsert daily activity: one record, or {records: [...]}",
    description=(
        "Each record is the day's cumulative total from one source: it replaces the "
        "previous value for (user, day, source), never adds. The day's effective value "
        "is the maximum across sources. All records are validated before any is stored."
    ),
)
async def sync(
    ctx: Ctx,
    principal: CurrentPrincipal,
    body: Annotated[SyncBody, Body()],
) -> JSONBytes:
    batch = body if isinstance(body, Batch) else Batch(records=[body])
    result = await service.sync(ctx, principal, batch)
    return ok(result, "Activity synced.")


@router.get(
    "/stats/{user_id}",
    response_model=Envelope[Stats],
    summary="Totals, averages, streaks, per-competition standing",
)
async def user_stats(
    ctx: Ctx,
    principal: CurrentPrincipal,
    user_id: Annotated[str, Path(pattern=ID_PATTERN)],
    competition_id: CompetitionQuery = None,
    step_goal: Annotated[int | None, Query(ge=1, le=100_000)] = None,
) -> JSONBytes:
    return ok(await views.stats_view(ctx, principal, user_id, competition_id, step_goal))


@router.get(
    "/history/{user_id}",
    response_model=Envelope[History],
    summary="Daily records in a date range: effective value and per source",
)
async def history(
    ctx: Ctx,
    principal: CurrentPrincipal,
    user_id: Annotated[str, Path(pattern=ID_PATTERN)],
    from_: Annotated[str | None, Query(alias="from", pattern=DAY_PATTERN)] = None,
    to: Annotated[str | None, Query(pattern=DAY_PATTERN)] = None,
    competition_id: CompetitionQuery = None,
) -> JSONBytes:
    return ok(await views.history_view(ctx, principal, user_id, from_, to, competition_id))
