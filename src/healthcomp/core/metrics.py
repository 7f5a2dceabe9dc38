"""Prometheus metrics: what every process counts, and `/metrics`, one view of them all.

`healthcomp serve` runs several worker processes (and a parent that supervises the
embedded Redis). Each counts into its own memory-mapped files in one directory
(prometheus-client's multiprocess mode: `PROMETHEUS_MULTIPROC_DIR`, which the parent
empties, or makes, before it imports this module: the client library picks its mode on
import, see `cli.metrics_directory`), and whichever worker answers `/metrics` adds them
all up. A worker that exits (or is killed) leaves its
counters in the sum; the gauge of open WebSockets counts live processes only.

A process that is not started that way (the test suite, `create_app()` in another
server) counts in memory and `/metrics` shows that one process, with the client
library's process and Python collectors.

Label values are bounded: routes are templates (`/api/v1/leaderboard/{competition_id}`,
`unmatched` for a path no route serves), reasons are the error codes of the envelope.

Everything is named `healthcomp_…`; docs/DEPLOYMENT.md ("Metrics") lists them with what to
alert on.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from bisect import bisect_left

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
# The classic text format, which every Prometheus reads (the names here need none of
# the newer format's escaping, so the text is the same).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# --- requests -------------------------------------------------------------------------

# Seconds: a leaderboard page is about a millisecond, a cold analytics view a few
# hundred; the deadline (HC_REQUEST_TIMEOUT) ends anything past ten.
_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

HTTP_REQUESTS = Counter(
    "healthcomp_http_requests",
    "HTTP requests answered, by method, route template and status.",
    ["method", "route", "status"],
)
HTTP_LATENCY = Histogram(
    "healthcomp_http_request_duration_seconds",
    "Time from a request's arrival to the end of its answer, by method and route template.",
    ["method", "route"],
    buckets=_LATENCY,
)
# The sync route (served by `lean` too), whose requests are counted as syncs.
SYNC_PATH = "/api/v1/fitness/sync"
SYNCS = Counter(
    "healthcomp_syncs",
    "Activity sync requests: accepted, or rejected with the error code as the reason.",
    ["result", "reason"],
)
SYNC_RECORDS = Counter(
    "healthcomp_sync_records",
    "Activity records in sync requests: accepted (stored), or rejected with the "
    "request (nothing of a rejected batch is stored), by the request's error code.",
    ["result", "reason"],
)

# --- live leaderboards ----------------------------------------------------------------

WS_OPEN = Gauge(
    "healthcomp_websocket_connections",
    "Live leaderboard WebSockets open now (processes that are alive).",
    multiprocess_mode="livesum",
)
WS_REFUSED = Counter(
    "healthcomp_websocket_refused",
    "WebSocket handshakes refused, by error code (unauthorized, not_found, rate_limited…).",
    ["reason"],
)
LIVE_EVENTS = Counter(
    "healthcomp_live_events",
    "Board events taken by this service's rooms to fan out to their WebSockets "
    "(each process counts the events of the boards it has clients for).",
)
LIVE_WRITES = Counter(
    "healthcomp_live_deliveries",
    "Writes of frames to WebSocket clients (one write may carry several events and "
    "the board); counted by the second.",
)
LIVE_LAG = Histogram(
    "healthcomp_live_delivery_lag_seconds",
    "Time from a board change's commit (Redis's clock) to its fan-out here.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)

# --- Redis ----------------------------------------------------------------------------

REDIS_ERRORS = Counter(
    "healthcomp_redis_errors",
    "Redis failures answered 503: `unreachable` (connection, timeout, cluster down) or "
    "the server's refusal code (`readonly`, `loading`, `oom`…); `events_link` for the "
    "live events' connection.",
    ["kind"],
)
REDIS_RECONNECTS = Counter(
    "healthcomp_redis_reconnects",
    "Connections to Redis opened again after they had been open: `commands` (the "
    "request pool) or `events` (the live events' subscription).",
    ["link"],
)
EMBEDDED_RESTARTS = Counter(
    "healthcomp_embedded_redis_restarts",
    "Times the supervisor restarted the embedded Redis server after it died.",
)

# --- competitions and money -----------------------------------------------------------

RECOUNT_JOBS = Counter(
    "healthcomp_recount_jobs",
    "Recount jobs (after an edit that changes scoring): started, resumed (after a "
    "process died), finished, superseded (by a newer edit).",
    ["event"],
)
RECOUNT_PARTICIPANTS = Counter(
    "healthcomp_recount_participants",
    "Participants recounted by recount jobs.",
)
DISTRIBUTIONS = Counter(
    "healthcomp_prize_distributions",
    "Competitions finalized here with their ledger written: `prizes`, or `refunds` "
    "(below the minimum or no eligible winner); a cancel is `cancelled`.",
    ["outcome"],
)
PAYOUTS = Counter(
    "healthcomp_payouts",
    "Ledger lines with money to pay written by distributions and cancels, by kind "
    "(prize, refund) and currency.",
    ["kind", "currency"],
)
PAYOUT_CENTS = Counter(
    "healthcomp_payout_cents",
    "Minor units (cents) written to ledgers, by kind (prize, refund) and currency.",
    ["kind", "currency"],
)


# --- counted where it happens, added up every second -----------------------------------
#
# A Prometheus increment in multiprocess mode is a locked write into a memory-mapped file:
# 3 to 4 us each, 13 us for a request's counter and histogram with their label lookups,
# about a tenth of a leaderboard read. The request path (and the fan-out, thousands of
# writes per event) counts into plain dictionaries instead, and `flush` adds them to the
# Prometheus values: every second (`flush_every`, in each worker) and before every
# exposition. A scrape sees another worker's last second only on the next one.


class Tally:
    """Counts of a counter, by label values (a tuple), not yet added to it."""

    __slots__ = ("counter", "pending")

    def __init__(self, counter: Counter) -> None:
        self.counter = counter
        self.pending: dict[tuple[str | int, ...], float] = {}

    def add(self, labels: tuple[str | int, ...], amount: float = 1) -> None:
        pending = self.pending
        pending[labels] = pending.get(labels, 0) + amount

    def flush(self) -> None:
        pending, self.pending = self.pending, {}
        for labels, amount in pending.items():
            (self.counter.labels(*labels) if labels else self.counter).inc(amount)


class Timings:
    """Observations of a histogram, by label values: per bucket, and their sum."""

    __slots__ = ("bounds", "histogram", "pending")

    def __init__(self, histogram: Histogram, buckets: tuple[float, ...]) -> None:
        self.histogram = histogram
        self.bounds = (*buckets, float("inf"))
        # labels -> [count in each bucket (not cumulative)..., sum]
        self.pending: dict[tuple[str, ...], list[float]] = {}

    def observe(self, labels: tuple[str, ...], value: float) -> None:
        row = self.pending.get(labels)
        if row is None:
            row = self.pending[labels] = [0.0] * (len(self.bounds) + 1)
        row[bisect_left(self.bounds, value)] += 1  # the first bucket whose bound >= value
        row[-1] += value

    def flush(self) -> None:
        pending, self.pending = self.pending, {}
        for labels, row in pending.items():
            child = self.histogram.labels(*labels)
            # What Histogram.observe does, n observations at once: the client library
            # has no public call for it (its tests pin this, tests/core/test_metrics.py).
            for bucket, count in zip(child._buckets, row, strict=False):
                if count:
                    bucket.inc(count)
            child._sum.inc(row[-1])


REQUESTS = Tally(HTTP_REQUESTS)
LATENCY = Timings(HTTP_LATENCY, _LATENCY)
SYNC_COUNTS = Tally(SYNCS)
RECORD_COUNTS = Tally(SYNC_RECORDS)
DELIVERED = Tally(LIVE_WRITES)
_PENDING: tuple[Tally | Timings, ...] = (REQUESTS, LATENCY, SYNC_COUNTS, RECORD_COUNTS, DELIVERED)


def flush() -> None:
    for pending in _PENDING:
        pending.flush()


async def flush_every(seconds: float = 1.0) -> None:
    """In each worker, for its life (cancelled at shutdown, after a last flush)."""
    try:
        while True:
            await asyncio.sleep(seconds)
            flush()
    finally:
        flush()


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROCESS_ENV) or None


def process_exited() -> None:
    """A worker on its way out: its open-connections gauge leaves the sum."""
    directory = multiprocess_dir()
    if directory:
        with contextlib.suppress(OSError):
            multiprocess.mark_process_dead(os.getpid(), directory)  # type: ignore[no-untyped-call]


_LIVE_FILE = re.compile(r"^gauge_live\w*?_(\d+)\.db$")


def _forget_dead(directory: str) -> None:
    """The live gauges of workers that died without saying so (`kill -9`)."""
    for entry in os.scandir(directory):
        found = _LIVE_FILE.match(entry.name)
        if found is None:
            continue
        pid = int(found.group(1))
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            with contextlib.suppress(OSError):
                multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
        except PermissionError:  # alive, someone else's
            pass


def exposition(directory: str | None = None) -> bytes:
    """The text `/metrics` answers: every process's counters when they share a
    directory (`directory`, else the environment's), else this process's."""
    flush()
    directory = directory or multiprocess_dir()
    if directory is None:
        return generate_latest(REGISTRY)
    _forget_dead(directory)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    return generate_latest(registry)
