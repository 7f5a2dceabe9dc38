"""`/metrics` of a real `healthcomp serve` with two workers: one view of both, whichever
answers; the live leaderboard's metrics moved by a real WebSocket and a sync.

The multi-process view does not depend on the Redis behind it: this runs once, on the
embedded backend's run (tests/core/test_metrics.py covers each metric in process)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import BACKEND
from tests.live.support import Service, bearer, open_competition, services, sync, watch

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(BACKEND != "embedded", reason="runs once, on the embedded run"),
]

BOARD = "/api/v1/leaderboard/{competition_id}"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def metrics_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("metrics")


@pytest.fixture(scope="module")
def service(
    redis_url: str,
    prefix: str,
    metrics_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
    _drop_keys: None,
) -> Iterator[Service]:
    env = {"HC_WORKERS": "2", "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    with services(redis_url, prefix, tmp_path_factory.mktemp("svc"), 1, **env) as started:
        yield started[0]


@pytest.fixture
async def http(service: Service) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=service.base, timeout=10) as client:
        yield client


async def scrape(http: httpx.AsyncClient) -> Samples:
    resp = await http.get("/metrics")
    assert resp.status_code == 200, resp.text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(resp.text)
        for s in family.samples
    }


def get(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def eventually(http: httpx.AsyncClient, check: Any, within: float = 5.0) -> Samples:
    """Scrape until `check(samples)` holds (a worker adds its batched counts every second)."""
    deadline = time.monotonic() + within
    while True:
        samples = await scrape(http)
        if check(samples) or time.monotonic() > deadline:
            return samples
        await asyncio.sleep(0.2)


def reads_by_process(directory: Path) -> dict[int, float]:
    """The leaderboard reads answered 200 that each process's own file holds."""
    found: dict[int, float] = {}
    for path in directory.glob("counter_*.db"):
        pid = int(path.stem.rsplit("_", 1)[1])
        for metric in MultiProcessCollector.merge([str(path)]):
            for s in metric.samples:
                if s.name == "healthcomp_http_requests_total" and s.labels == {
                    "method": "GET",
                    "route": BOARD,
                    "status": "200",
                }:
                    found[pid] = found.get(pid, 0.0) + s.value
    return found


async def test_two_workers_one_view(
    http: httpx.AsyncClient, service: Service, metrics_dir: Path
) -> None:
    await open_competition(http, "mw", "org", "ana", "ben", visibility="public")
    labels = {"method": "GET", "route": BOARD, "status": "200"}
    before = get(await scrape(http), "healthcomp_http_requests_total", **labels)
    sent = 0
    limits = httpx.Limits(max_keepalive_connections=0)  # each read on a new connection
    async with httpx.AsyncClient(base_url=service.base, timeout=10, limits=limits) as fresh:
        for _ in range(10):  # until both workers have answered some
            reads = [fresh.get("/api/v1/leaderboard/mw", headers=bearer("ana")) for _ in range(100)]
            assert {r.status_code for r in await asyncio.gather(*reads)} == {200}
            sent += 100
            await asyncio.sleep(1.2)  # each worker writes its counts every second
            if len([n for n in reads_by_process(metrics_dir).values() if n > 0]) >= 2:
                break
    by_process = reads_by_process(metrics_dir)
    assert len([n for n in by_process.values() if n > 0]) >= 2, by_process
    # Every read counted once, whichever worker answered it and whichever answers
    # /metrics (the other adds its last second's counts within a second).
    samples = await eventually(
        http, lambda s: get(s, "healthcomp_http_requests_total", **labels) - before >= sent
    )
    assert get(samples, "healthcomp_http_requests_total", **labels) - before == sent


async def test_live_connections_events_and_lag(http: httpx.AsyncClient, service: Service) -> None:
    await open_competition(http, "mlive", "org", "ana", "ben")
    first = await scrape(http)
    open_before = get(first, "healthcomp_websocket_connections")
    events = get(first, "healthcomp_live_events_total")
    lags = get(first, "healthcomp_live_delivery_lag_seconds_count")
    writes = get(first, "healthcomp_live_deliveries_total")
    refused = get(first, "healthcomp_websocket_refused_total", reason="unauthorized")

    watcher = await watch(service.ws_url("mlive", token=bearer("ana")["Authorization"][7:]))
    try:
        await watcher.until(lambda frames: any(f["type"] == "leaderboard_update" for f in frames))
        samples = await eventually(
            http, lambda s: get(s, "healthcomp_websocket_connections") == open_before + 1
        )
        assert get(samples, "healthcomp_websocket_connections") == open_before + 1
        await sync(http, "ben", 4321)
        await watcher.until(lambda frames: any(f["type"] == "score_update" for f in frames))

        def moved(s: Samples) -> bool:
            return (
                get(s, "healthcomp_live_events_total") > events
                and get(s, "healthcomp_live_delivery_lag_seconds_count") > lags
                and get(s, "healthcomp_live_deliveries_total") > writes
            )

        samples = await eventually(http, moved)
        assert moved(samples), samples
        # The event is fanned out about at once on loopback: well under a second.
        lag = get(samples, "healthcomp_live_delivery_lag_seconds_sum") - get(
            first, "healthcomp_live_delivery_lag_seconds_sum"
        )
        assert 0 <= lag < 1.0 * (get(samples, "healthcomp_live_delivery_lag_seconds_count") - lags)
    finally:
        await watcher.close()
    samples = await eventually(
        http, lambda s: get(s, "healthcomp_websocket_connections") == open_before
    )
    assert get(samples, "healthcomp_websocket_connections") == open_before

    refusal = await watch(service.ws_url("mlive", token="not-a-token"))
    await refusal.until(lambda frames: any(f["type"] == "error" for f in frames))
    await refusal.close()
    samples = await scrape(http)
    assert get(samples, "healthcomp_websocket_refused_total", reason="unauthorized") == refused + 1
