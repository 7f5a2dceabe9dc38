"""The application factory and its lifespan."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from healthcomp import __version__
from healthcomp.activity.routes import router as activity_router
from healthcomp.analytics.routes import router as analytics_router
from healthcomp.competitions import service as competitions
from healthcomp.competitions.routes import router as competitions_router
from healthcomp.console.routes import router as console_router
from healthcomp.core import metrics
from healthcomp.core.auth import Authenticator
from healthcomp.core.clock import Clock
from healthcomp.core.context import AppContext
from healthcomp.core.docs import install_docs
from healthcomp.core.errors import install_error_handlers
from healthcomp.core.keys import Keys
from healthcomp.core.logs import RequestLog, configure
from healthcomp.core.middleware import BodyLimit, Cors, Deadline
from healthcomp.core.openapi import install_openapi
from healthcomp.core.ratelimit import UserBudgets
from healthcomp.core.redis import (
    warn_if_not_persistent,
)
from healthcomp.core.settings import Settings, get_settings
from healthcomp.core.standalone import connect
from healthcomp.engine import sweep
from healthcomp.fairplay.routes import router as fairplay_router
from healthcomp.health.routes import router as health_router
from healthcomp.leaderboard.routes import router as leaderboard_router
from healthcomp.lean import Lean
from healthcomp.live import socket as live
from healthcomp.prizes.routes import router as prizes_router
from healthcomp.users.routes import router as users_router

log = logging.getLogger("healthcomp")


def create_app(settings: Settings | None = None, clock: Clock | None = None) -> FastAPI:
    settings = settings or get_settings()
    # Fails before anything starts when production has no way to verify tokens.
    auth = Authenticator(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        handle, embedded = connect(settings)
        ctx = AppContext(
            settings=settings,
            redis=handle,
            keys=Keys(settings.key_prefix),
            auth=auth,
            clock=clock or Clock(),
            embedded=embedded,
        )
        ctx.limits = UserBudgets(ctx)
        ctx.limits.start()
        app.state.ctx = ctx
        if handle.mode != "embedded":
            try:
                await asyncio.wait_for(warn_if_not_persistent(handle.client), 3)
            except TimeoutError:
                log.warning("Redis did not answer the persistence check within 3 s")
        # Finishes work that a dead request or process left owed: now, then periodically.
        sweeper = asyncio.create_task(sweep.loop(ctx, [competitions.finish_closings]))
        counted = asyncio.create_task(metrics.flush_every())
        if getattr(app.state, "tune_gc", False):
            tune_gc()
        try:
            yield
        finally:
            hub = ctx.services.get("hub")
            if hub is not None:
                await hub.stop()  # closes its WebSockets with 1001
            await sweep.stop(sweeper)
            await sweep.stop(counted)
            await ctx.limits.stop()
            for task in list(ctx.background):
                await sweep.stop(task)
            await auth.aclose()
            await handle.close()
            if embedded is not None:
                embedded.stop()
            metrics.process_exited()

    app = FastAPI(
        title="Health Competition API",
        version=__version__,
        summary="Fitness competitions: activity sync, live leaderboards, exact payouts.",
        lifespan=lifespan,
        docs_url=None,  # install_docs serves /docs with its assets: it works offline
        redoc_url=None,
        openapi_url="/openapi.json",
        # FastAPI's OpenTelemetry hook looks the global providers up on every request;
        # this service exports Prometheus metrics instead.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    install_error_handlers(app)
    install_openapi(app)
    install_docs(app, "/docs")
    app.include_router(health_router)
    app.include_router(console_router)
    routers = (
        users_router,
        competitions_router,
        activity_router,
        analytics_router,
        leaderboard_router,
        prizes_router,
        fairplay_router,
    )
    for router in routers:
        app.include_router(router, prefix="/api/v1")
    # Innermost first: the lean routes run inside the body limit and the deadline.
    app.add_middleware(Lean)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(Deadline, seconds=settings.request_timeout_seconds)
    if settings.cors_origins:  # off by default: no CORS header at all
        app.add_middleware(Cors, origins=settings.cors_origins)
    app.add_middleware(RequestLog)  # outermost: the id and the access line
    return app


def tune_gc() -> None:
    """Once the worker has started: move everything allocated so far (modules, the app,
    its routes) out of the collector's sight, and collect the young generation less
    often. A request allocates few cycles; scanning start-up objects again and again
    cost 10-14% of the CPU and doubled p99 (docs/BENCHMARKS.md)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 50, 100)
    release_free_memory()


def release_free_memory() -> None:
    """Give the C heap's free pages back to the system (glibc's `malloc_trim`): the
    imports and the app's construction free a megabyte or two of temporaries that would
    otherwise stay in every idle worker's RSS. Nothing where libc is not glibc."""
    try:
        trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return
    trim(0)


class Served:
    """The app as `healthcomp serve` runs it: the live leaderboards' WebSockets go
    straight to `healthcomp.live`, without the framework's and the middlewares' frames
    that would otherwise stay on each connection's stack for its whole life (about
    3 KiB of an idle connection); everything else goes to the FastAPI app."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if live.takes(scope):
            await live.serve(self.app.state.ctx, scope, receive, send)
            return
        await self.app(scope, receive, send)


def serve_app() -> Served:
    """The app as `healthcomp serve` runs it in each worker (GC tuned at start-up)."""
    settings = get_settings()
    configure(settings.log_level, json=settings.is_production)  # before anything logs
    app = create_app(settings)
    app.state.tune_gc = True
    return Served(app)
