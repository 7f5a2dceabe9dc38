from __future__ import annotations

import secrets
from typing import Any

import orjson
from fastapi import APIRouter
from redis.exceptions import RedisClusterException, RedisError
from starlette.responses import Response

from healthcomp import SERVICE_NAME, __version__
from healthcomp.core.deps import Ctx
from healthcomp.core.errors import error_response

router = APIRouter(tags=["health"])

_LIVE = orjson.dumps({"status": "healthy", "service": SERVICE_NAME, "version": __version__})


@router.get(
    "/health",
    summary="Liveness: the process answers; touches no dependency",
    responses={200: {"content": {"application/json": {"example": orjson.loads(_LIVE)}}}},
)
async def health() -> Response:
    return Response(_LIVE, media_type="application/json")


@router.get(
    "/health/ready",
    summary="Readiness: Redis is reachable and writable",
    responses={503: {"description": "Redis is unreachable or read-only"}},
)
async def ready(ctx: Ctx) -> Response:
    token = secrets.token_hex(8)
    key = ctx.keys.health_probe()
    try:
        await ctx.r.set(key, token, px=10_000)
        written = await ctx.r.get(key)
    except (RedisError, RedisClusterException):
        written = None
    if written != token:
        return error_response(
            503,
            "not_ready",
            "Redis is not reachable or not writable.",
            headers={"Retry-After": "2"},
        )
    body: dict[str, Any] = {
        "status": "ready",
        "service": SERVICE_NAME,
        "version": __version__,
        "redis": ctx.redis.mode,
    }
    return Response(orjson.dumps(body), media_type="application/json")
