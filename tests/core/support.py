"""Helpers for tests that need an app built from their own settings."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI
from redis.exceptions import RedisClusterException, RedisError

from healthcomp.app import create_app
from healthcomp.core.clock import Clock, FixedClock
from healthcomp.core.settings import Settings
from tests.conftest import START, _delete_prefix


@asynccontextmanager
async def running_app(
    settings: Settings,
    clock: Clock | None = None,
    *,
    setup: Callable[[FastAPI], Any] | None = None,
    keep_keys: bool = False,
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """`create_app(settings)` inside its lifespan, with a client; its keys are deleted after
    unless `keep_keys`. `setup` may add routes before the app starts."""
    app = create_app(settings, clock=clock or FixedClock(START))
    if setup is not None:
        setup(app)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                yield app, client
        finally:
            if not keep_keys:
                # An app pointed at a dead Redis has nothing to clean.
                with contextlib.suppress(RedisError, RedisClusterException):
                    await _delete_prefix(app.state.ctx)
