"""The cluster the test run uses, made the other way: with the embedded Redis 6.2 and
CLUSTER MEET / ADDSLOTS / REPLICATE instead of `redis-cli --cluster create` (what
tests/cluster.py does where no redis-cli is found). The service's client spreads its
keys over the three masters and each replica follows its master.

Starts a cluster of its own, so it runs once, on the embedded pass (tests/backends.py).
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from healthcomp.core.embedded import redis_server_binary
from healthcomp.core.redis import create_client
from tests.cluster import ReplicatedCluster
from tests.conftest import make_settings


async def test_a_redis_62_cluster_made_without_redis_cli_serves_the_client(
    tmp_path: Path,
) -> None:
    cluster = ReplicatedCluster(
        tmp_path / "cluster", binary=str(redis_server_binary()), use_cli=False
    ).start()
    try:
        assert cluster.version == 6
        view = cluster.view()
        masters = view.masters()
        assert len(masters) == 3 and len(view.nodes) == 6
        settings = make_settings(tmp_path, cluster.url)
        client: Any = create_client(cluster.url, settings)
        try:
            keys = [f"{settings.key_prefix}:{{k{uuid.uuid4().hex[:6]}{i}}}" for i in range(30)]
            for key in keys:
                await client.set(key, "v")
            assert [await client.get(key) for key in keys] == ["v"] * len(keys)
        finally:
            await client.aclose()
        cluster.wait_healthy()  # every replica has caught up with its master
        for address in masters:
            master = cluster.node(address)
            held = int(str(master.call("DBSIZE")))
            assert held > 0, f"{address} holds none of the keys"
            assert int(str(cluster.replica_of(master).call("DBSIZE"))) == held
    finally:
        cluster.stop()
