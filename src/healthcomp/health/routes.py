from __future__ import annotations

import hmac
import secrets
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.security import HTTPAuthorizationCredentials
from redis.exceptions import RedisClusterException, RedisError
from starlette.responses import Response

from healthcomp import SERVICE_NAME, __version__
from healthcomp.core import metrics
from healthcomp.core.deps import Ctx, bearer, get_principal
from healthcomp.core.errors import Forbidden, NotFound, error_response

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


@router.get(
    "/metrics",
    summary="Prometheus metrics of every process of this server",
    description=(
        "Prometheus text format. `HC_METRICS` decides who may read it: `public`, "
        "`protected` (a service-role token, or `HC_METRICS_TOKEN`, as a bearer) or `off` "
        "(404). Unset, it is public in development and protected in production."
    ),
    response_class=Response,
    responses={
        200: {"content": {metrics.CONTENT_TYPE.split(";")[0]: {"schema": {"type": "string"}}}},
        401: {"description": "Protected, and no valid bearer"},
        403: {"description": "Protected, and the token is a user's"},
        404: {"description": "Metrics are off"},
    },
)
async def prometheus_metrics(
    ctx: Ctx,
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Response:
    settings = ctx.settings
    mode = settings.metrics_mode
    if mode == "off":
        raise NotFound("Metrics are off on this server (HC_METRICS=off).")
    if mode == "protected":
        given = credentials.credentials.strip() if credentials is not None else ""
        expected = settings.metrics_token
        if not (expected and given and hmac.compare_digest(given.encode(), expected.encode())):
            principal = await get_principal(ctx, request, credentials)
            if not principal.is_service:
                raise Forbidden("Metrics are for the service role or the metrics token.")
    return Response(metrics.exposition(), media_type=metrics.CONTENT_TYPE)
