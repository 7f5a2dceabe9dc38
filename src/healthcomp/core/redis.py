"""Connecting to Redis: the embedded server, an external one, or a cluster.

Forms of `REDIS_URL`:

* `redis://[:password@]host:port/db`, `rediss://…` (TLS), `unix:///path/to.sock?db=N`
* `redis+cluster://host:port` or `rediss+cluster://host:port`: a Redis Cluster, any
  node as the seed (cluster mode has only database 0).

Every client has short timeouts, a bounded pool and a few retries with exponential
backoff: a blip is absorbed, an outage surfaces quickly as 503 rather than a hang.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, TypeAlias

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import BlockingConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError

from healthcomp.core.settings import Settings

log = logging.getLogger("healthcomp.redis")

RedisClient: TypeAlias = "Redis | RedisCluster"


def is_cluster_url(url: str) -> bool:
    return url.startswith(("redis+cluster://", "rediss+cluster://"))


def _retry() -> Retry:
    # Retry a refused or dropped connection (a restart, a failover), never a timeout:
    # a server that hangs would otherwise hold every request for retries x timeout.
    return Retry(
        ExponentialBackoff(cap=0.4, base=0.05), retries=2, supported_errors=(RedisConnectionError,)
    )


def create_client(url: str, settings: Settings) -> RedisClient:
    timeout = settings.redis_timeout_seconds
    if is_cluster_url(url):
        plain = url.replace("+cluster", "", 1)
        return RedisCluster.from_url(
            plain,
            decode_responses=True,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            max_connections=settings.redis_max_connections,
            retry=_retry(),
        )
    pool = BlockingConnectionPool.from_url(
        url,
        decode_responses=True,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        max_connections=settings.redis_max_connections,
        timeout=timeout,
        retry=_retry(),
        health_check_interval=30,
    )
    return Redis.from_pool(pool)


async def warn_if_not_persistent(client: RedisClient) -> bool:
    """Log a warning when the server keeps nothing on disk. True when it persists."""
    try:
        info: Any = await client.config_get("appendonly")
        save: Any = await client.config_get("save")
    except (RedisError, RedisClusterException):  # CONFIG disabled, or not reachable yet
        log.info("could not read the server's persistence settings (CONFIG disabled?)")
        return True
    # A cluster client answers per node; merge whatever we got.
    values = {**_flatten(info), **_flatten(save)}
    aof = values.get("appendonly") == "yes"
    rdb = bool(values.get("save"))
    if not (aof or rdb):
        log.warning(
            'the external Redis has persistence off (appendonly no, save ""): '
            "a restart of it loses every competition, score and payout"
        )
        return False
    return True


def _flatten(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    flat: dict[str, str] = {}
    for key, item in value.items():
        if isinstance(item, dict):
            flat.update(_flatten(item))
        else:
            flat[str(key)] = str(item)
    return flat


@dataclass
class RedisHandle:
    client: RedisClient
    mode: str  # "embedded" | "external" | "cluster"
    url: str

    async def close(self) -> None:
        await self.client.aclose()
