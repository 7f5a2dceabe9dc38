"""Typed dependencies: a route's signature says who may call it."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from healthcomp.core import ratelimit
from healthcomp.core.auth import Principal
from healthcomp.core.context import AppContext
from healthcomp.core.errors import Forbidden, Unauthorized
from healthcomp.core.proxies import ClientAddress

bearer = HTTPBearer(auto_error=False, description="A Supabase access token (JWT).")


async def get_ctx(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.ctx
    return ctx


Ctx = Annotated[AppContext, Depends(get_ctx)]


async def get_principal(
    ctx: Ctx,
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    try:
        principal = await _verify(ctx, request, credentials)
    except Unauthorized:
        await reject(ctx, request.scope)
        raise
    await ratelimit.spend(ctx, principal)
    return principal


async def reject(ctx: AppContext, scope: Any) -> None:
    """A request without a valid token counts against its address (SPEC §4): a flood
    of guessed tokens meets 429; signed-in users sharing a NAT address do not."""
    address = client_address(ctx, scope)
    await ratelimit.check(ctx, "ip", address, ctx.settings.rate_limit_ip_per_minute)


def client_address(ctx: AppContext, scope: Any) -> str:
    """The client's address: the peer, or what trusted proxies say it is (core.proxies)."""
    resolver = ctx.service("client_address", lambda c: ClientAddress(c.settings.trusted_proxies))
    return resolver.of(scope)


async def _verify(
    ctx: AppContext, request: Request, credentials: HTTPAuthorizationCredentials | None
) -> Principal:
    if credentials is None:
        header = request.headers.get("authorization")
        if header is None:
            raise Unauthorized("Missing Authorization header; send 'Bearer <token>'.")
        raise Unauthorized("Malformed Authorization header; send 'Bearer <token>'.")
    token = credentials.credentials.strip()
    if not token:
        raise Unauthorized("Malformed Authorization header; send 'Bearer <token>'.")
    return await ctx.auth.verify(token)


async def get_user(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
    if principal.user_id is None:
        raise Forbidden("This route is for signed-in users; a service token has no user.")
    return principal


# A signed-in user or a trusted server.
CurrentPrincipal = Annotated[Principal, Depends(get_principal)]
# A signed-in user only (the service role has no `sub`).
CurrentUser = Annotated[Principal, Depends(get_user)]
