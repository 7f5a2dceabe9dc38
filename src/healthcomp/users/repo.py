"""Profile storage: one hash per user, `P:{u:U}:profile`."""

from __future__ import annotations

from typing import Any, cast

from healthcomp.core.auth import Principal
from healthcomp.core.clock import rfc3339, to_ms
from healthcomp.core.context import AppContext
from healthcomp.engine import writes
from healthcomp.users.schemas import Profile

# Creates the profile on first sight, atomically, and returns it.
# The first element of the answer is 1 when this call created the profile.
_ENSURE = """
local created = 0
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'display_name', ARGV[1], 'email', ARGV[2],
             'created_at', ARGV[3], 'updated_at', ARGV[3])
  created = 1
end
local out = redis.call('HGETALL', KEYS[1])
table.insert(out, 1, created)
return out
"""


def _to_profile(user_id: str, flat: list[str] | dict[str, str]) -> Profile:
    data = dict(zip(flat[::2], flat[1::2], strict=True)) if isinstance(flat, list) else flat
    return Profile(
        user_id=user_id,
        display_name=data.get("display_name") or user_id,
        avatar_url=data.get("avatar_url") or None,
        email=data.get("email") or None,
        created_at=data.get("created_at", ""),
        updated_at=data.get("updated_at", ""),
    )


async def ensure_profile(ctx: AppContext, principal: Principal) -> Profile:
    assert principal.user_id is not None
    script = ctx.scripts.get("users.ensure")
    if script is None:
        script = ctx.scripts["users.ensure"] = ctx.r.register_script(_ENSURE)
    now = rfc3339(ctx.clock.now())
    flat = await script(
        keys=[ctx.keys.profile(principal.user_id)],
        args=[principal.default_name(), principal.email or "", now],
    )
    profile = _to_profile(principal.user_id, flat[1:])
    if flat[0] == 1:
        # Joined (by a service) before the first sign-in: boards showed the bare id.
        await writes.rename_everywhere(
            ctx, profile.user_id, profile.display_name, to_ms(ctx.clock.now())
        )
    return profile


async def get_profile(ctx: AppContext, user_id: str) -> Profile | None:
    data = cast(dict[str, str], await ctx.r.hgetall(ctx.keys.profile(user_id)))
    if not data:
        return None
    return _to_profile(user_id, data)


async def update_profile(
    ctx: AppContext,
    principal: Principal,
    display_name: str | None,
    avatar_url: str | None,
    set_avatar: bool,
) -> Profile:
    assert principal.user_id is not None
    await ensure_profile(ctx, principal)
    fields: dict[str, str] = {"updated_at": rfc3339(ctx.clock.now())}
    if display_name is not None:
        fields["display_name"] = display_name
    if set_avatar:
        fields["avatar_url"] = avatar_url or ""
    key = ctx.keys.profile(principal.user_id)
    await ctx.r.hset(key, mapping=cast(Any, fields))
    profile = await get_profile(ctx, principal.user_id)
    assert profile is not None
    return profile
