"""Reaching the service's Redis: for the app's lifespan, and as an app context for
commands outside the server (`healthcomp demo`, `healthcomp payouts`)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from healthcomp.core.auth import Authenticator
from healthcomp.core.context import AppContext
from healthcomp.core.embedded import EMBEDDED_URL_ENV, EmbeddedRedis, start_or_share
from healthcomp.core.keys import Keys
from healthcomp.core.redis import RedisHandle, create_client, is_cluster_url
from healthcomp.core.settings import Settings


def connect(settings: Settings) -> tuple[RedisHandle, EmbeddedRedis | None]:
    """The service's Redis: `REDIS_URL` (a cluster by its scheme), else the embedded
    server this process's parent started (its URL in the environment), else the data
    directory's embedded server, shared with a running service or started here (then
    returned, for the caller to stop)."""
    embedded: EmbeddedRedis | None = None
    if settings.redis_url:
        url = settings.redis_url
        mode = "cluster" if is_cluster_url(url) else "external"
    elif os.environ.get(EMBEDDED_URL_ENV):
        url, mode = os.environ[EMBEDDED_URL_ENV], "embedded"
    else:
        url, embedded = start_or_share(settings.data_dir, fsync=settings.embedded_fsync)
        mode = "embedded"
    return RedisHandle(create_client(url, settings), mode, url), embedded


@asynccontextmanager
async def standalone(settings: Settings) -> AsyncIterator[AppContext]:
    """The service's Redis (`connect`) as an `AppContext`, for the while."""
    handle, embedded = connect(settings)
    try:
        yield AppContext(
            settings=settings,
            redis=handle,
            keys=Keys(settings.key_prefix),
            auth=Authenticator(settings),
        )
    finally:
        await handle.close()
        if embedded is not None:
            embedded.stop()
