"""`/metrics` in one process: every metric issue 11 names, counted by the traffic that
should move it, and who may read it (public, protected, off).

The multi-process view (several workers, one sum) is tested on real `healthcomp serve`
processes in tests/live/test_metrics.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY, CollectorRegistry, Histogram
from prometheus_client.parser import text_string_to_metric_families

from healthcomp.core import metrics
from healthcomp.core.clock import FixedClock
from healthcomp.core.settings import Settings
from tests.conftest import SERVICE_AUTH, assert_error, auth, make_settings
from tests.core.support import running_app
from tests.domain.helpers import API, at, create_comp, join, rec, sync

# Every family /metrics must show (Prometheus appends _total to counters' samples).
FAMILIES = {
    "healthcomp_http_requests": "counter",
    "healthcomp_http_request_duration_seconds": "histogram",
    "healthcomp_syncs": "counter",
    "healthcomp_sync_records": "counter",
    "healthcomp_websocket_connections": "gauge",
    "healthcomp_websocket_refused": "counter",
    "healthcomp_live_events": "counter",
    "healthcomp_live_deliveries": "counter",
    "healthcomp_live_delivery_lag_seconds": "histogram",
    "healthcomp_redis_errors": "counter",
    "healthcomp_redis_reconnects": "counter",
    "healthcomp_embedded_redis_restarts": "counter",
    "healthcomp_recount_jobs": "counter",
    "healthcomp_recount_participants": "counter",
    "healthcomp_prize_distributions": "counter",
    "healthcomp_payouts": "counter",
    "healthcomp_payout_cents": "counter",
}


def value(name: str, **labels: str) -> float:
    """A sample of this process's registry (0 before it was first counted), with what
    was counted since the last flush."""
    metrics.flush()
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def scrape(client: httpx.AsyncClient, **headers: str) -> dict[tuple[str, Any], float]:
    resp = await client.get("/metrics", headers=headers)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == metrics.CONTENT_TYPE
    samples: dict[tuple[str, Any], float] = {}
    for family in text_string_to_metric_families(resp.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def sample(samples: dict[tuple[str, Any], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_every_named_metric_is_served_in_prometheus_text(client: httpx.AsyncClient) -> None:
    # Some traffic first, so that the labelled families have samples.
    await client.get(f"{API}/competitions/nope", headers=auth("a"))
    resp = await client.get("/metrics")
    assert resp.status_code == 200
    found = {f.name: f.type for f in text_string_to_metric_families(resp.text)}
    missing = {name for name in FAMILIES if name not in found}
    assert not missing, missing
    assert {name: found[name] for name in FAMILIES} == FAMILIES


async def test_requests_by_route_template_status_and_latency(client: httpx.AsyncClient) -> None:
    route = "/api/v1/competitions/{competition_id}"
    before = await scrape(client)
    for cid in ("one", "two", "three"):  # three ids, one template
        assert_error(await client.get(f"{API}/competitions/{cid}", headers=auth("a")), 404)
    assert_error(await client.get(f"{API}/competitions/x"), 401)
    await client.get("/no/such/path/4711")
    await client.request("BREW", "/health")  # any token is a method
    after = await scrape(client)

    def delta(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert delta("healthcomp_http_requests_total", method="GET", route=route, status="404") == 3
    assert delta("healthcomp_http_requests_total", method="GET", route=route, status="401") == 1
    # A path no route serves is one label, whatever the path: no label per path.
    unmatched = {"method": "GET", "route": "unmatched", "status": "404"}
    assert delta("healthcomp_http_requests_total", **unmatched) == 1
    assert not any("4711" in str(labels) for _, labels in after)
    assert (
        delta("healthcomp_http_requests_total", method="other", route="/health", status="405") == 1
    )
    assert not any("BREW" in str(labels) for _, labels in after)
    count = "healthcomp_http_request_duration_seconds_count"
    assert delta(count, method="GET", route=route) == 4
    assert delta("healthcomp_http_request_duration_seconds_sum", method="GET", route=route) > 0
    inf = delta(
        "healthcomp_http_request_duration_seconds_bucket", method="GET", route=route, le="+Inf"
    )
    assert inf == 4


async def test_syncs_and_records_by_result_and_reason(client: httpx.AsyncClient) -> None:
    def syncs(result: str, reason: str) -> tuple[float, float]:
        labels = {"result": result, "reason": reason}
        return (
            value("healthcomp_syncs_total", **labels),
            value("healthcomp_sync_records_total", **labels),
        )

    ok, invalid = syncs("accepted", "ok"), syncs("rejected", "validation_error")
    unauthorized, media = (
        syncs("rejected", "unauthorized"),
        syncs("rejected", "unsupported_media_type"),
    )
    three = [rec(f"2026-11-0{d}", 1000 * d) for d in (1, 2, 3)]
    resp = await client.post(f"{API}/fitness/sync", json={"records": three}, headers=auth("a"))
    assert resp.status_code == 200, resp.text
    bad = [rec("2026-11-01", 10), rec("2026-11-02", -5)]
    resp = await client.post(f"{API}/fitness/sync", json={"records": bad}, headers=auth("a"))
    assert_error(resp, 422, "validation_error")
    resp = await client.post(f"{API}/fitness/sync", json=rec("2026-11-01", 10))
    assert_error(resp, 401, "unauthorized")
    resp = await client.post(
        f"{API}/fitness/sync",
        content=b"steps=10",
        headers={**auth("a"), "content-type": "text/plain"},
    )
    assert_error(resp, 415, "unsupported_media_type")

    assert syncs("accepted", "ok") == (ok[0] + 1, ok[1] + 3)
    assert syncs("rejected", "validation_error") == (invalid[0] + 1, invalid[1] + 2)
    assert syncs("rejected", "unauthorized") == (unauthorized[0] + 1, unauthorized[1] + 1)
    # Refused for its type before it was read: a sync with no records counted.
    assert syncs("rejected", "unsupported_media_type") == (media[0] + 1, media[1])


async def test_recounts_distributions_payouts_and_cancels_are_counted(
    client: httpx.AsyncClient, clock: FixedClock
) -> None:
    started, finished = (
        value("healthcomp_recount_jobs_total", event=e) for e in ("started", "finished")
    )
    recounted = value("healthcomp_recount_participants_total")
    clock.at = at(2026, 11, 10, 8)
    await create_comp(client, "rc", start_date="2026-11-11", end_date="2026-11-20")
    await join(client, "rc", "a", "b")
    resp = await client.patch(
        f"{API}/competitions/rc", json={"start_date": "2026-11-10"}, headers=auth("org")
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["data"]["recount"]["state"] == "done"
    assert value("healthcomp_recount_jobs_total", event="started") == started + 1
    assert value("healthcomp_recount_jobs_total", event="finished") == finished + 1
    assert value("healthcomp_recount_participants_total") == recounted + 2

    # A distribution: three prizes of a 100.00 pool.
    prizes = value("healthcomp_prize_distributions_total", outcome="prizes")
    paid = value("healthcomp_payouts_total", kind="prize", currency="USD")
    cents = value("healthcomp_payout_cents_total", kind="prize", currency="USD")
    await create_comp(client, "money", prize_pool_cents=10000)
    await join(client, "money", "a", "b", "c")
    for user, steps in (("a", 5000), ("b", 4000), ("c", 3000)):
        await sync(client, user, rec("2026-11-05", steps))
    clock.at = at(2026, 12, 5)
    resp = await client.post(f"{API}/prizes/distribute/money", headers=auth("org"))
    assert resp.status_code == 200, resp.text
    again = await client.post(f"{API}/prizes/distribute/money", headers=SERVICE_AUTH)
    assert again.status_code == 200, again.text  # the same ledger: counted once
    assert value("healthcomp_prize_distributions_total", outcome="prizes") == prizes + 1
    assert value("healthcomp_payouts_total", kind="prize", currency="USD") == paid + 3
    assert value("healthcomp_payout_cents_total", kind="prize", currency="USD") == cents + 10000

    # A cancel refunds the entry fees: two of 5.00.
    cancelled = value("healthcomp_prize_distributions_total", outcome="cancelled")
    refunds = value("healthcomp_payouts_total", kind="refund", currency="EUR")
    refunded = value("healthcomp_payout_cents_total", kind="refund", currency="EUR")
    clock.at = at(2026, 12, 10)
    await create_comp(
        client,
        "fees",
        start_date="2026-12-20",
        end_date="2026-12-31",
        entry_fee_cents=500,
        currency="EUR",
    )
    await join(client, "fees", "a", "b")
    resp = await client.post(
        f"{API}/competitions/fees/cancel", json={"reason": "rain"}, headers=auth("org")
    )
    assert resp.status_code == 200, resp.text
    assert value("healthcomp_prize_distributions_total", outcome="cancelled") == cancelled + 1
    assert value("healthcomp_payouts_total", kind="refund", currency="EUR") == refunds + 2
    assert value("healthcomp_payout_cents_total", kind="refund", currency="EUR") == refunded + 1000


def test_timings_add_up_as_the_histogram_would() -> None:
    """The batched observations land in the buckets Histogram.observe would use (le:
    a value on a bound is in that bucket), and the sum; the client library's
    internals they write through are pinned here."""
    registry = CollectorRegistry()
    histogram = Histogram("t_seconds", "t", ["route"], buckets=(0.001, 0.01), registry=registry)
    direct = Histogram("d_seconds", "d", ["route"], buckets=(0.001, 0.01), registry=registry)
    timings = metrics.Timings(histogram, (0.001, 0.01))
    values = [0.0, 0.001, 0.0011, 0.01, 0.5, 7.0]
    for v in values:
        timings.observe(("/a",), v)
        direct.labels("/a").observe(v)
    assert registry.get_sample_value("t_seconds_count", {"route": "/a"}) is None
    timings.flush()
    timings.flush()  # nothing twice
    for bound in ("0.001", "0.01", "+Inf"):
        labels = {"route": "/a", "le": bound}
        got = registry.get_sample_value("t_seconds_bucket", labels)
        assert got == registry.get_sample_value("d_seconds_bucket", labels), bound
    assert registry.get_sample_value("t_seconds_bucket", {"route": "/a", "le": "0.001"}) == 2
    assert registry.get_sample_value("t_seconds_sum", {"route": "/a"}) == pytest.approx(sum(values))
    assert registry.get_sample_value("t_seconds_count", {"route": "/a"}) == len(values)


# --- who may read it ---------------------------------------------------------------------

METRICS_TOKEN = "scraper-" + "s" * 24


def _settings(tmp_path: Path, redis_url: str, **overrides: Any) -> Settings:
    return make_settings(tmp_path, redis_url, **overrides)


async def test_protected_metrics_take_the_service_role_or_the_metrics_token(
    tmp_path: Path, redis_url: str
) -> None:
    settings = _settings(tmp_path, redis_url, metrics="protected", metrics_token=METRICS_TOKEN)
    async with running_app(settings) as (_, client):
        assert_error(await client.get("/metrics"), 401, "unauthorized")
        assert_error(await client.get("/metrics", headers=auth("a")), 403, "forbidden")
        wrong = {"Authorization": "Bearer " + "x" * 32}
        assert_error(await client.get("/metrics", headers=wrong), 401, "unauthorized")
        await scrape(client, **SERVICE_AUTH)
        await scrape(client, Authorization=f"Bearer {METRICS_TOKEN}")


async def test_production_protects_metrics_by_default() -> None:
    production = Settings.model_construct(environment="production")
    assert production.metrics_mode == "protected"
    assert Settings.model_construct(environment="development").metrics_mode == "public"
    assert (
        Settings.model_construct(environment="production", metrics="public").metrics_mode
        == "public"
    )


async def test_metrics_off_is_404(tmp_path: Path, redis_url: str) -> None:
    async with running_app(_settings(tmp_path, redis_url, metrics="off")) as (_, client):
        assert_error(await client.get("/metrics", headers=SERVICE_AUTH), 404, "not_found")


# --- the multi-process directory -----------------------------------------------------------

_CHILD = """
import os, sys, time
from healthcomp.core import metrics
metrics.WS_OPEN.inc(int(sys.argv[1]))
metrics.HTTP_REQUESTS.labels("GET", "/x", "200").inc(5)
print("ready", flush=True)
if sys.argv[2] == "die":
    os._exit(0)  # gone without a word, as after kill -9
time.sleep(60)
"""


def test_one_view_of_every_process_and_no_gauge_of_the_dead(tmp_path: Path) -> None:
    """Counters of every process add up (a dead one's stay); the open-connections gauge
    counts live processes only, also one that died without saying so."""
    env = {**os.environ, metrics.MULTIPROCESS_ENV: str(tmp_path)}
    alive = subprocess.Popen(
        [sys.executable, "-c", _CHILD, "2", "live"], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert alive.stdout is not None and alive.stdout.readline().strip() == "ready"
        dead = subprocess.run(
            [sys.executable, "-c", _CHILD, "3", "die"], env=env, capture_output=True, text=True
        )
        assert dead.stdout.strip() == "ready", dead.stderr
        text = metrics.exposition(str(tmp_path)).decode()
        samples = {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }
        assert samples[("healthcomp_websocket_connections", frozenset())] == 2
        requests = frozenset({"method": "GET", "route": "/x", "status": "200"}.items())
        assert samples[("healthcomp_http_requests_total", requests)] == 10
        assert not list(tmp_path.glob(f"gauge_live*_{dead_pid(tmp_path, alive.pid)}.db"))
    finally:
        alive.kill()
        alive.wait()


def dead_pid(directory: Path, alive: int) -> int:
    """The pid of the other process that wrote counters in `directory`."""
    pids = {int(p.stem.rsplit("_", 1)[1]) for p in directory.glob("counter_*.db")}
    (other,) = pids - {alive}
    return other


def test_the_cli_leaves_the_client_library_unimported() -> None:
    """`healthcomp serve` must set the metrics' directory before prometheus-client is
    imported (it picks its mode on import): importing the command does not import it."""
    code = "import sys, healthcomp.cli; sys.exit('prometheus_client' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
