"""The service's cluster client (core/redis.py) on the run's cluster of three masters:
it routes by slot from its first command, follows ASK redirections under concurrency,
answers a slot caught half moved as TRYAGAIN (a 503), and keeps one node object per
address across refreshes of the slot map. Each test failed on redis-py 7.4 as it comes.

Cluster pass only (`HC_TEST_BACKEND=cluster`).
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from typing import Any

import pytest
from redis.exceptions import TryAgainError

from healthcomp.core.embedded import free_loopback_port
from healthcomp.core.errors import datastore_unavailable
from healthcomp.core.redis import create_client
from healthcomp.core.settings import Settings
from tests.cluster import Node, ReplicatedCluster, running_cluster
from tests.conftest import BACKEND

pytestmark = pytest.mark.skipif(BACKEND != "cluster", reason="needs the cluster run's cluster")


@pytest.fixture
def cluster(redis_url: str) -> ReplicatedCluster:
    found = running_cluster(redis_url)
    assert found is not None, "the cluster run's cluster is not registered"
    return found


def moved_answers(cluster: ReplicatedCluster) -> int:
    """MOVED errors the nodes have answered so far (INFO errorstats)."""
    total = 0
    for node in cluster.nodes:
        stats: Any = node.client.info("errorstats")
        total += int(stats.get("errorstat_MOVED", {}).get("count", 0))
    return total


def key_on(cluster: ReplicatedCluster, node: Node, prefix: str) -> str:
    for i in itertools.count():
        key = f"{prefix}:{{k{i}}}"
        if cluster.owner(cluster.slot_of(key)).address == node.address:
            return key
    raise AssertionError("unreachable")


async def test_a_new_client_sends_each_command_to_its_slot_from_the_first(
    cluster: ReplicatedCluster, redis_url: str, settings: Settings
) -> None:
    """redis-py 7.4 picks a node before it has the slot map: a new client's first
    commands went to any node, and every fifth MOVED closed all its connections."""
    keys = [f"{settings.key_prefix}:{{r{i}}}" for i in range(60)]
    before = moved_answers(cluster)
    client: Any = create_client(redis_url, settings)
    try:
        await asyncio.gather(*(client.set(key, "1") for key in keys))
        assert await asyncio.gather(*(client.get(key) for key in keys)) == ["1"] * len(keys)
    finally:
        for key in keys:
            await client.delete(key)
        await client.aclose()
    assert moved_answers(cluster) == before


async def test_ask_redirections_are_followed_under_concurrency_and_a_split_slot_is_503(
    cluster: ReplicatedCluster, redis_url: str, settings: Settings
) -> None:
    """A slot half moved: its key on the importing node is read through ASK by 50
    concurrent commands (redis-py 7.4 sent ASKING and the command on different
    connections: the importing node sent the command back with MOVED, and under load
    it bounced until "TTL exhausted", a 500), and a script whose keys are on both sides
    is TRYAGAIN, which the service answers 503."""
    tag = uuid.uuid4().hex[:8]
    moving = f"{settings.key_prefix}:{{a{tag}}}:moving"
    staying = f"{settings.key_prefix}:{{a{tag}}}:staying"
    slot = cluster.slot_of(moving)
    source = cluster.owner(slot)
    target = cluster.node(next(a for a in cluster.view().masters() if a != source.address))
    client: Any = create_client(redis_url, settings)
    try:
        await client.set(moving, "there")
        await client.set(staying, "here")
        # Several open connections to each node, so that two commands of one task can
        # go on different ones.
        elsewhere = key_on(cluster, target, settings.key_prefix)
        await asyncio.gather(*(client.get(k) for k in [elsewhere, staying] * 20))
        target.call("CLUSTER", "SETSLOT", slot, "IMPORTING", source.node_id)
        source.call("CLUSTER", "SETSLOT", slot, "MIGRATING", target.node_id)
        source.call("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", moving)

        before = moved_answers(cluster)
        assert await asyncio.gather(*(client.get(moving) for _ in range(50))) == ["there"] * 50
        # Each went from the source (ASK) to the target, where it ran: none came back.
        assert moved_answers(cluster) == before
        assert await client.get(staying) == "here"
        both = client.register_script(
            "return {redis.call('get', KEYS[1]), redis.call('get', KEYS[2])}"
        )
        with pytest.raises(TryAgainError) as caught:
            await both(keys=[moving, staying])
        assert datastore_unavailable(caught.value)
    finally:
        cluster.settle()  # finishes the migration
        await client.delete(moving, staying)
        await client.aclose()
    assert cluster.owner(slot).address == target.address


async def test_a_refresh_of_the_slot_map_keeps_one_node_object_per_address(
    redis_url: str, settings: Settings
) -> None:
    """redis-py 7.4 filled the slot map with fresh node objects on every refresh while
    its node cache kept the old ones (with stale roles after a failover), and dropped
    the previous ones with their connections open."""
    client: Any = create_client(redis_url, settings)
    try:
        await client.ping()
        for _ in range(2):
            await client.nodes_manager.initialize()  # as after a MOVED or a failover
            for nodes in client.nodes_manager.slots_cache.values():
                for node in nodes:
                    assert client.get_node(node_name=node.name) is node
            assert client.get_default_node() in client.get_primaries()
    finally:
        await client.aclose()


async def test_a_client_starts_from_the_first_seed_that_answers(
    cluster: ReplicatedCluster, settings: Settings
) -> None:
    """`redis+cluster://h1:p1,h2:p2`: the first seed is down, the second answers."""
    down = free_loopback_port()
    url = f"redis+cluster://127.0.0.1:{down},{cluster.nodes[-1].address}"
    client: Any = create_client(url, settings)
    try:
        key = f"{settings.key_prefix}:seeds"
        await client.set(key, "ok")
        assert await client.get(key) == "ok"
        await client.delete(key)
        assert len(client.get_nodes()) == len(cluster.nodes)
    finally:
        await client.aclose()
