from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from healthcomp.activity.schemas import UserCompetitions
from healthcomp.competitions import repo as competitions
from healthcomp.core.deps import Ctx, CurrentPrincipal, CurrentUser
from healthcomp.core.keys import ID_PATTERN
from healthcomp.core.responses import Envelope, JSONBytes, ok
from healthcomp.leaderboard import service as leaderboard
from healthcomp.users import repo
from healthcomp.users.schemas import Profile, ProfileUpdate

router = APIRouter(prefix="/users", tags=["users"])


@router.get("/me", response_model=Envelope[Profile], summary="The caller's profile")
async def me(ctx: Ctx, user: CurrentUser) -> JSONBytes:
    return ok(await repo.ensure_profile(ctx, user))


@router.put(
    "/me/profile",
    response_model=Envelope[Profile],
    summary="Set display name and avatar",
    description="Fields left out stay as they are; `avatar_url: null` removes the avatar.",
)
async def put_profile(ctx: Ctx, user: CurrentUser, body: ProfileUpdate) -> JSONBytes:
    profile = await repo.update_profile(
        ctx,
        user,
        body.display_name,
        body.avatar_url,
        set_avatar="avatar_url" in body.model_fields_set,
    )
    if body.display_name is not None:
        await competitions.rename_everywhere(ctx, profile.user_id, profile.display_name)
    return ok(profile, "Profile updated.")


@router.get(
    "/{user_id}/competitions",
    response_model=Envelope[UserCompetitions],
    summary="The user's competitions with score and rank (self or service)",
)
async def user_competitions(
    ctx: Ctx, principal: CurrentPrincipal, user_id: Annotated[str, Path(pattern=ID_PATTERN)]
) -> JSONBytes:
    principal.require_self_or_service(user_id)
    return ok({"user_id": user_id, "competitions": await leaderboard.standings_of(ctx, user_id)})
