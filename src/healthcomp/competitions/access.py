"""Who may see or change a competition, as typed dependencies.

A route's signature names its caller: `OrganizerOf` (the organizer or the service
role), `MemberOf` (a participant, the organizer or the service role), `AnyCompetition`
(any signed-in user: the id is the invitation). A private competition answers someone
outside it the same 404 as an unknown id, so nobody learns it exists or who is in it.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from healthcomp.competitions import repo
from healthcomp.competitions.model import Stored
from healthcomp.competitions.schemas import CompetitionId
from healthcomp.core.auth import Principal
from healthcomp.core.context import AppContext
from healthcomp.core.deps import Ctx, CurrentPrincipal
from healthcomp.core.errors import Forbidden, NotFound
from healthcomp.engine import reads


def not_found(cid: str) -> NotFound:
    return NotFound(f"No competition '{cid}'.", error="competition_not_found")


async def get(ctx: AppContext, cid: str) -> Stored:
    stored = await repo.load(ctx, cid)
    if stored is None:
        raise not_found(cid)
    return stored


async def is_member(ctx: AppContext, stored: Stored, principal: Principal) -> bool:
    """A participant, the organizer or the service role."""
    if principal.is_service or stored.organized_by(principal.user_id):
        return True
    assert principal.user_id is not None
    return await reads.is_participant(ctx, stored.id, principal.user_id)


async def refuse(
    ctx: AppContext, stored: Stored, principal: Principal, forbidden: Forbidden
) -> None:
    """403 for someone who can see the competition, the unknown-id 404 otherwise."""
    if stored.is_public or await is_member(ctx, stored, principal):
        raise forbidden
    raise not_found(stored.id)


async def competition_of(
    ctx: Ctx, principal: CurrentPrincipal, competition_id: CompetitionId
) -> Stored:
    return await get(ctx, competition_id)


async def organizer_of(
    ctx: Ctx, principal: CurrentPrincipal, competition_id: CompetitionId
) -> Stored:
    stored = await get(ctx, competition_id)
    if not (principal.is_service or stored.organized_by(principal.user_id)):
        await refuse(
            ctx,
            stored,
            principal,
            Forbidden("Only the competition's organizer may do this.", error="not_organizer"),
        )
    return stored


async def member_of(ctx: Ctx, principal: CurrentPrincipal, competition_id: CompetitionId) -> Stored:
    stored = await get(ctx, competition_id)
    if not await is_member(ctx, stored, principal):
        await refuse(
            ctx,
            stored,
            principal,
            Forbidden("Only participants and the organizer may see this.", error="not_participant"),
        )
    return stored


# Any signed-in user (or the service role): the competition's id is its invitation.
AnyCompetition = Annotated[Stored, Depends(competition_of)]
# The organizer or the service role.
OrganizerOf = Annotated[Stored, Depends(organizer_of)]
# A participant, the organizer or the service role.
MemberOf = Annotated[Stored, Depends(member_of)]
