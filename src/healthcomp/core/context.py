"""What every request can reach: settings, Redis, keys, auth and the clock."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, cast

from healthcomp.core.auth import Authenticator
from healthcomp.core.clock import Clock
from healthcomp.core.embedded import EmbeddedRedis
from healthcomp.core.keys import Keys
from healthcomp.core.redis import RedisClient, RedisHandle
from healthcomp.core.settings import Settings

if TYPE_CHECKING:
    from healthcomp.core.lua import Pipeliner
    from healthcomp.core.ratelimit import UserBudgets

_S = TypeVar("_S")


@dataclass
class AppContext:
    settings: Settings
    redis: RedisHandle
    keys: Keys
    auth: Authenticator
    clock: Clock = field(default_factory=Clock)
    embedded: EmbeddedRedis | None = None
    scripts: dict[str, Any] = field(default_factory=dict)
    # Work started by a request that may outlive it (recounts); cancelled at shutdown.
    background: set[asyncio.Task[Any]] = field(default_factory=set)
    # Per-worker state of the domains above core (the leaderboard's pages), by name.
    services: dict[str, Any] = field(default_factory=dict)
    # The per-user rate limit (set by the app's lifespan).
    limits: UserBudgets | None = None
    _pipeliner: Pipeliner | None = field(default=None, repr=False)

    def service(self, name: str, make: Callable[[AppContext], _S]) -> _S:
        """The worker's one `name` service (the leaderboard's pages, the live hub),
        made by `make` on first use."""
        found = self.services.get(name)
        if found is None:
            found = self.services[name] = make(self)
        return cast(_S, found)

    @property
    def pipeliner(self) -> Pipeliner:
        """Script calls of this turn of the event loop, sent as one pipeline."""
        if self._pipeliner is None:
            from healthcomp.core.lua import Pipeliner  # core.lua imports this module

            self._pipeliner = Pipeliner(self)
        return self._pipeliner

    @property
    def r(self) -> Any:
        """The Redis client (a `Redis` or a `RedisCluster`).

        Typed `Any` on purpose: redis-py 7 annotates its asyncio commands with the sync
        client's `Awaitable[T] | T`, so every `await` would need a cast that checks
        nothing. The engine's scripts and reads turn replies into typed values at once.
        """
        client: RedisClient = self.redis.client
        return client
