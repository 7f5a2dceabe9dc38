"""An app context outside the server, for commands that work on the service's Redis
(`healthcomp demo`, `healthcomp payouts`)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from healthcomp.core.auth import Authenticator
from healthcomp.core.context import AppContext
from healthcomp.core.embedded import EMBEDDED_URL_ENV, start_or_share
from healthcomp.core.keys import Keys
from healthcomp.core.redis import RedisHandle, create_client, is_cluster_url
from healthcomp.core.settings import Settings


@asynccontextmanager
async def standalone(settings: Settings) -> AsyncIterator[AppContext]:
    """The service's Redis (`REDIS_URL`; else the data directory's embedded server,
    shared with a running service or started for the while) as an `AppContext`."""
    url = settings.redis_url or os.environ.get(EMBEDDED_URL_ENV)
    embedded = None
    if not url:
        url, embedded = start_or_share(settings.data_dir, fsync=settings.embedded_fsync)
    mode = "cluster" if is_cluster_url(url) else ("external" if settings.redis_url else "embedded")
    handle = RedisHandle(create_client(url, settings), mode, url)
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
