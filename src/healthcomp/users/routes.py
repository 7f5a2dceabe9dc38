from __future__ import annotations

from fastapi import APIRouter

from healthcomp.core.clock import to_ms
from healthcomp.core.deps import Ctx, CurrentUser
from healthcomp.core.responses import Envelope, JSONBytes, ok
from healthcomp.engine import writes
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
        await writes.rename_everywhere(
            ctx, profile.user_id, profile.display_name, to_ms(ctx.clock.now())
        )
    return ok(profile, "Profile updated.")
