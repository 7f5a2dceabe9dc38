from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from healthcomp.competitions import service
from healthcomp.competitions.access import AnyCompetition, MemberOf, OrganizerOf
from healthcomp.competitions.schemas import (
    AuditPage,
    Competition,
    CompetitionCreate,
    CompetitionPage,
    CompetitionUpdate,
    Status,
)
from healthcomp.core.auth import Principal
from healthcomp.core.deps import Ctx, CurrentPrincipal
from healthcomp.core.errors import ValidationFailed
from healthcomp.core.keys import ID_PATTERN
from healthcomp.core.responses import Envelope, JSONBytes, ok

router = APIRouter(prefix="/competitions", tags=["competitions"])


class Membership(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: Annotated[str, Field(pattern=ID_PATTERN)] | None = Field(
        None, description="Defaults to the caller; only the service role may name another."
    )


class Reason(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field("", max_length=500)


class MembershipResult(BaseModel):
    competition_id: str
    user_id: str
    participant_count: int


def _member(principal: Principal, body: Membership | None) -> str:
    user_id = (body.user_id if body else None) or principal.user_id
    if not user_id:
        raise ValidationFailed(
            "A service call must name the user_id.",
            details=[{"field": "user_id", "message": "required", "type": "missing"}],
        )
    return user_id


def _membership(cid: str, user_id: str, count: int) -> dict[str, Any]:
    return {"competition_id": cid, "user_id": user_id, "participant_count": count}


@router.post(
    "",
    status_code=201,
    response_model=Envelope[Competition],
    summary="Create a competition; the caller is its organizer",
)
async def create(ctx: Ctx, principal: CurrentPrincipal, body: CompetitionCreate) -> JSONBytes:
    stored = await service.create(ctx, principal, body)
    return ok(stored.view(ctx.clock.now()), "Competition created.", status=201)


@router.get(
    "",
    response_model=Envelope[CompetitionPage],
    summary="List competitions: the public ones and your own (all of them for the service role)",
    description=(
        "Without `status`, newest first. By status: `upcoming` soonest start first, "
        "`active` soonest end first, `ended`, `cancelled` and `finalized` latest first."
    ),
)
async def list_competitions(
    ctx: Ctx,
    principal: CurrentPrincipal,
    status: Annotated[Status | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> JSONBytes:
    return ok(await service.list_page(ctx, principal, status, limit, offset))


@router.get(
    "/{competition_id}",
    response_model=Envelope[Competition],
    summary="One competition (any signed-in user: its id is its invitation)",
)
async def get_one(ctx: Ctx, stored: AnyCompetition) -> JSONBytes:
    return ok(stored.view(ctx.clock.now()))


@router.patch(
    "/{competition_id}",
    response_model=Envelope[Competition],
    summary="Edit (organizer or service); scoring and money rules only before the start",
)
async def edit(
    ctx: Ctx, principal: CurrentPrincipal, stored: OrganizerOf, body: CompetitionUpdate
) -> JSONBytes:
    stored = await service.update(ctx, principal, stored, body)
    return ok(stored.view(ctx.clock.now()), "Competition updated.")


def _membership_route(
    action: str, summary: str, change: Callable[..., Awaitable[int]], message: str
) -> None:
    """POST /{competition_id}/join and /leave: the caller, or the user a service call
    names; answers the new participant count."""

    async def route(
        ctx: Ctx,
        principal: CurrentPrincipal,
        stored: AnyCompetition,
        body: Membership | None = None,
    ) -> JSONBytes:
        user_id = _member(principal, body)
        count = await change(ctx, principal, stored, user_id)
        return ok(_membership(stored.id, user_id, count), message)

    router.add_api_route(
        f"/{{competition_id}}/{action}",
        route,
        methods=["POST"],
        name=action,
        response_model=Envelope[MembershipResult],
        summary=summary,
    )


_membership_route("join", "Join before the end, within max_participants", service.join, "Joined.")
_membership_route(
    "leave",
    "Leave before the end; your entry leaves the board, the record of taking part stays",
    service.leave,
    "Left.",
)


@router.post(
    "/{competition_id}/cancel",
    response_model=Envelope[Competition],
    summary="Cancel: the organizer before the end, the service role until finalized",
)
async def cancel(
    ctx: Ctx,
    principal: CurrentPrincipal,
    stored: OrganizerOf,
    body: Reason | None = None,
) -> JSONBytes:
    stored = await service.cancel(ctx, principal, stored, body.reason if body else "")
    return ok(stored.view(ctx.clock.now()), "Competition cancelled.")


@router.get(
    "/{competition_id}/audit",
    response_model=Envelope[AuditPage],
    summary="The audit trail: all of it for the organizer and the service role, "
    "a participant's own records for them",
)
async def audit(ctx: Ctx, principal: CurrentPrincipal, stored: MemberOf) -> JSONBytes:
    records = await service.audit(ctx, principal, stored)
    return ok({"competition_id": stored.id, "records": records})
