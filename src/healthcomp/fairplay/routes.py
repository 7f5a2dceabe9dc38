"""Fair-play review routes (SPEC §5): the flags of a competition and the reviewer's
decisions, for its organizer and the service role; a participant lists their own
flags."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from healthcomp.competitions.access import MemberOf, OrganizerOf
from healthcomp.core.deps import Ctx, CurrentPrincipal
from healthcomp.core.keys import ID_PATTERN
from healthcomp.core.responses import Envelope, JSONBytes, ok
from healthcomp.fairplay import service
from healthcomp.fairplay.schemas import (
    Decision,
    DecisionBody,
    FlagPage,
    ReviewBody,
    Reviewed,
    State,
)

router = APIRouter(prefix="/competitions", tags=["fair play"])

FlagId = Annotated[str, Path(pattern=r"^[0-9]{1,18}$", description="A flag's id")]
UserId = Annotated[str, Path(pattern=ID_PATTERN)]


@router.get(
    "/{competition_id}/flags",
    response_model=Envelope[FlagPage],
    summary="Anomaly flags: all for the organizer and service role, your own for a participant",
    description=(
        "Newest first, filtered by `state`. Each flag is one participant's day with what "
        "was found on it; `counted` is the day as the competition holds it now. The "
        "organizer's view also lists the disqualified participants."
    ),
)
async def flags(
    ctx: Ctx,
    principal: CurrentPrincipal,
    stored: MemberOf,
    state: Annotated[State | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> JSONBytes:
    return ok(
        await service.listing(ctx, principal, stored, state=state, limit=limit, offset=offset)
    )


@router.post(
    "/{competition_id}/flags/{flag_id}",
    response_model=Envelope[Reviewed],
    summary="Review a flag: dismiss, exclude the day from the score, or restore it",
    description=(
        "Organizer or service role, before finalization (409 `competition_closed` after). "
        "Audited (who, when, what, why); an exclusion or restoration re-ranks the board "
        "and is a `score_update` with cause `review` on the WebSocket, and the payout "
        "preview follows. An organizer cannot review flags on their own entry (403 "
        "`own_entry`)."
    ),
)
async def review(
    ctx: Ctx, principal: CurrentPrincipal, stored: OrganizerOf, flag_id: FlagId, body: ReviewBody
) -> JSONBytes:
    data = await service.review(
        ctx, principal, stored, flag_id, action=body.action, reason=body.reason
    )
    return ok(
        data, "Flag reviewed." if data["changed"] else "No change: the flag is in that state."
    )


def _decision_route(action: str, summary: str, message: str) -> None:
    async def route(
        ctx: Ctx,
        principal: CurrentPrincipal,
        stored: OrganizerOf,
        user_id: UserId,
        body: DecisionBody,
    ) -> JSONBytes:
        data = await service.disqualify(
            ctx, principal, stored, user_id, action=action, reason=body.reason
        )
        return ok(data, message if data["changed"] else "No change.")

    router.add_api_route(
        f"/{{competition_id}}/participants/{{user_id}}/{action}",
        route,
        methods=["POST"],
        name=action,
        response_model=Envelope[Decision],
        summary=summary,
    )


_decision_route(
    "disqualify",
    "Disqualify a participant: off the board, cannot win, still visible to the organizer",
    "Participant disqualified.",
)
_decision_route("reinstate", "Reinstate a disqualified participant", "Participant reinstated.")
