"""An external Redis fails under load: killed with -9 and restarted, stopped (SIGSTOP)
and continued, turned into a read-only replica and back.

Two `healthcomp serve` processes share a private redis-server (tests/faults/support.py
`OwnRedis`: append-only, `appendfsync always`, a free loopback port). Throughout, the
mixed load runs: batch syncs from 40 participants, board reads, 8 WebSocket watchers.
Each test asserts: every answer is 200 or a 503 in the error envelope with
`Retry-After` (never a 500, never a hang past the request deadline), the fault was
seen (503s), every sync answered 200 is held afterwards and the board agrees with the
days, every watcher reaches the board's last event with none skipped or repeated, and
the same service processes carry on.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from bench.mixedload import Book, outage

from healthcomp.core.embedded import free_loopback_port
from tests.faults.support import (
    PHASE,
    REDIS_TIMEOUT,
    REQUEST_TIMEOUT,
    SERVICE_ENV,
    OwnRedis,
    alive,
    answers,
    assert_only_200_or_503,
    embedded_pass_only,
    load_on,
    long_enough,
    new_board,
    ready,
    report,
    running,
    verify,
)
from tests.live.support import Service

pytestmark = [pytest.mark.slow, embedded_pass_only, long_enough]


@pytest.fixture(scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[OwnRedis]:
    redis = OwnRedis(tmp_path_factory.mktemp("own-redis"))
    await redis.start()
    try:
        yield redis
    finally:
        redis.stop()


@pytest.fixture(scope="module")
def pair(server: OwnRedis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Service]]:
    workdir: Path = tmp_path_factory.mktemp("services")
    services = [Service(server.url, "fx", workdir, **SERVICE_ENV) for _ in range(2)]
    with running(services):
        yield services


@pytest.fixture(scope="module")
async def book(pair: list[Service]) -> Book:
    return await new_board(pair[0].base, "ext", 40)


def _pids(pair: list[Service]) -> list[int]:
    assert all(alive(s) for s in pair), "a service process died"
    return [s.proc.pid for s in pair]


async def test_redis_killed_and_restarted(
    server: OwnRedis, pair: list[Service], book: Book
) -> None:
    pids = _pids(pair)
    load = load_on(pair, book)
    await load.start()
    try:
        await asyncio.sleep(PHASE)
        killed = time.monotonic()
        server.kill()
        await asyncio.sleep(1.0)
        restarted = time.monotonic()
        await server.start()
        back = await ready([s.base for s in pair])
        await asyncio.sleep(PHASE)
        await load.stop()

        assert_only_200_or_503(load)
        window = outage(load.attempts, killed)
        assert window["failed"] > 0, "the kill was not seen"
        assert max(a.took for a in load.attempts) < REQUEST_TIMEOUT + 1
        _, figures = await verify(load, pair[1].base)
        assert _pids(pair) == pids
    finally:
        await load.close()
    report(
        "external redis kill -9, down 1 s, restarted",
        {
            **figures,
            **window,
            "ready_after_restart_s": round(back, 3),
            "restart_at_s": round(restarted - killed, 3),
            **load.summary(),
        },
    )


async def test_redis_stops_answering(server: OwnRedis, pair: list[Service], book: Book) -> None:
    """SIGSTOP: connections stay open, nothing answers. Each request waits at most
    HC_REDIS_TIMEOUT per command (2 s) and the request deadline (10 s) bounds it."""
    pids = _pids(pair)
    load = load_on(pair, book)
    await load.start()
    stopped_for = max(3.0, PHASE)
    try:
        await asyncio.sleep(PHASE)
        stopped = time.monotonic()
        server.pause()
        try:
            await asyncio.sleep(stopped_for)
        finally:
            server.resume()
        continued = time.monotonic()
        back = await ready([s.base for s in pair])
        await asyncio.sleep(PHASE)
        await load.stop()

        assert_only_200_or_503(load)
        sent = [a for a in load.attempts if stopped + 0.1 <= a.started < continued]
        # Answered while Redis was stopped: 503, each within the deadline. (A request
        # still waiting at SIGCONT may well be answered 200.)
        during = [a for a in sent if a.started + a.took < continued]
        assert during and all(a.status == 503 for a in during), answers(during)
        assert max(a.took for a in load.attempts) < REQUEST_TIMEOUT + 1
        window = outage(load.attempts, stopped)
        assert window["failed"] > 0
        _, figures = await verify(load, pair[1].base)
        assert _pids(pair) == pids
    finally:
        await load.close()
    report(
        f"external redis SIGSTOP {stopped_for:g} s, then SIGCONT",
        {
            **figures,
            **window,
            "sent_while_stopped": len(sent),
            "answered_503_while_stopped": len(during),
            "max_503_s": round(max(a.took for a in during), 3),
            "answered_after_sigcont": dict(Counter(str(a.status) for a in sent if a not in during)),
            "redis_timeout_s": REDIS_TIMEOUT,
            "ready_after_sigcont_s": round(back, 3),
            **load.summary(),
        },
    )


async def test_redis_turns_read_only(server: OwnRedis, pair: list[Service], book: Book) -> None:
    """REPLICAOF a master that is not there (what a failover leaves for a moment): every
    write is refused with READONLY; reads go on. REPLICAOF NO ONE ends it."""
    pids = _pids(pair)
    load = load_on(pair, book)
    admin = server.admin()
    await load.start()
    read_only_for = max(2.0, PHASE)
    try:
        await asyncio.sleep(PHASE)
        demoted = time.monotonic()
        await admin.replicaof("127.0.0.1", str(free_loopback_port()))
        try:
            await asyncio.sleep(read_only_for)
        finally:
            await admin.replicaof("NO", "ONE")
        promoted = time.monotonic()
        back = await ready([s.base for s in pair])
        await asyncio.sleep(PHASE)
        await load.stop()

        assert_only_200_or_503(load)
        during = [a for a in load.attempts if demoted + 0.1 <= a.started < promoted - 0.1]
        during = [a for a in during if a.started + a.took < promoted]
        assert during and all(a.status == 503 for a in during), answers(during)
        reads = [r for r in load.reads if demoted + 0.1 <= r.started < promoted - 0.1]
        assert max(a.took for a in load.attempts) < REQUEST_TIMEOUT + 1
        window = outage(load.attempts, demoted)
        _, figures = await verify(load, pair[1].base)
        assert _pids(pair) == pids
    finally:
        await admin.aclose()
        await load.close()
    report(
        f"external redis read-only (REPLICAOF) {read_only_for:g} s",
        {
            **figures,
            **window,
            "syncs_while_read_only": len(during),
            "max_503_s": round(max(a.took for a in during), 3),
            "reads_while_read_only": dict(Counter(str(r.status) for r in reads)),
            "ready_after_promotion_s": round(back, 3),
            **load.summary(),
        },
    )
