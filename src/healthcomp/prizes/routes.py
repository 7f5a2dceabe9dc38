"""Prize routes (SPEC §5, §6.5)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path

from healthcomp.competitions.access import MemberOf, OrganizerOf
from healthcomp.core.deps import Ctx, CurrentPrincipal
from healthcomp.core.keys import ID_PATTERN
from healthcomp.core.responses import Envelope, JSONBytes, ok
from healthcomp.prizes import service
from healthcomp.prizes.schemas import CalculateBody, Calculation, History, Ledger

router = APIRouter(prefix="/prizes", tags=["prizes"])


@router.post(
    "/calculate/{competition_id}",
    response_model=Envelope[Calculation],
    summary="Payout preview from the current standings (participants, organizer, service)",
    description=(
        "Who would win what if the competition ended now: the pool (base prize plus the "
        "entry fees owed, minus the rake), split by the competition's scheme, ties sharing "
        "the places they occupy, to the minor unit. With `prize_pool`, another pool is "
        "previewed instead. Nothing changes. When no prizes would be paid (cancelled, "
        "fewer participants than `min_participants`, nobody above zero), `outcome` is "
        "`refunds` and says why."
    ),
)
async def calculate(
    ctx: Ctx,
    stored: MemberOf,
    body: Annotated[CalculateBody | None, Body()] = None,
) -> JSONBytes:
    data = await service.calculate(ctx, stored, body.prize_pool if body else None)
    return ok(data)


@router.post(
    "/distribute/{competition_id}",
    response_model=Envelope[Ledger],
    summary="Final payout, exactly once (organizer, service; after the grace period)",
    description=(
        "Freezes the final standings and writes the immutable ledger (prizes, or the "
        "entry fees refunded when no prizes are paid) and the outbox of payouts for a "
        "payment worker, and finalizes the competition: from then on syncs are stored but "
        "change no result, and no score write applies. Exactly once: a repeated or "
        "concurrent call answers the same ledger. 409 `too_early` before the grace period "
        "is over (saying when), 409 `competition_cancelled` for a cancelled competition."
    ),
)
async def distribute(ctx: Ctx, stored: OrganizerOf) -> JSONBytes:
    return ok(await service.distribute(ctx, stored), "Prizes distributed.")


@router.get(
    "/history/{user_id}",
    response_model=Envelope[History],
    summary="A user's prizes and refunds across competitions (self, service)",
    description=(
        "Every line about the user in the ledgers of their competitions: prizes from "
        "distributions, entry fees refunded by a distribution without prizes or by a "
        "cancel, each with its status (`pending` until a payment worker marks it). Newest "
        "first."
    ),
)
async def history(
    ctx: Ctx,
    principal: CurrentPrincipal,
    user_id: Annotated[str, Path(pattern=ID_PATTERN)],
) -> JSONBytes:
    principal.require_self_or_service(user_id)
    return ok(await service.history(ctx, user_id))
