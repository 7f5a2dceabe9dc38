"""The printed report: the machine, the tables, SPEC §8's targets; and its copy in
docs/BENCHMARKS.md, between the markers."""

from __future__ import annotations

import os
import platform
import re
import statistics
from dataclasses import dataclass, field
from datetime import datetime
from importlib import metadata
from pathlib import Path

from bench.million import SAMPLE
from bench.seed import SYNCED_DAYS
from bench.servers import RATE_LIMIT
from bench.wrk import Load, Result

BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
NONE = "n/a"  # a cell with nothing measured
PACKAGES = (
    ("fastapi", "fastapi"),
    ("starlette", "starlette"),
    ("uvicorn", "uvicorn"),
    ("uvloop", "uvloop"),
    ("httptools", "httptools"),
    ("granian", "granian"),
    ("redis-py", "redis"),
    ("hiredis", "hiredis"),
    ("orjson", "orjson"),
    ("pydantic", "pydantic"),
    ("PyJWT", "pyjwt"),
)


@dataclass(frozen=True)
class Row:
    key: str  # the `--only` name
    label: str
    result: Result


@dataclass(frozen=True)
class Million:
    participants: int
    seed_seconds: float
    bytes_per_participant: float
    around: Result | None  # one request in flight
    rank: Result | None
    load: Load
    around_busy: Result | None = None  # the worker saturated
    rank_busy: Result | None = None
    busy: Load | None = None


@dataclass(frozen=True)
class Analytics:
    """bench/analytics.py's run: a competition of `participants` over `days` days."""

    participants: int
    days: int  # seeded per participant (the window's past days; a few are not synced)
    window_days: int
    participant_days: int  # seeded in all
    seed_seconds: float
    bytes_added: int  # Redis `used_memory` after the seeding minus before
    first_ms: float  # the worker's first analytics request (numpy imported then)
    cold_ms: list[float]  # each right after a change to the board
    flags: int  # raised by the seeded field
    warm: Result | None  # the full view (service token), cached
    warm_summary: Result | None  # the participants' summary view, cached
    load: Load
    rss_mb: float | None = None  # the worker's RSS after the run


@dataclass(frozen=True)
class WsScenario:
    """One WebSocket scenario of bench/ws.py: connections open, syncs driven, frames timed."""

    name: str
    connections: int  # asked for
    opened: int  # connected and sent their snapshot
    competitions: int
    syncs: int
    deliveries: int  # expected: every open connection of a competition, every sync to it
    received: int  # score_update frames of those syncs that arrived
    lost: int
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    kib_per_connection: float | None  # the worker's RSS, opened minus before, over `opened`
    rss_mb: float  # the worker's RSS with the connections open and idle
    open_seconds: float
    closed_by_server: int = 0  # connections the server closed during the scenario
    out_of_order: int = 0  # score_update frames not after the connection's previous one
    failures: dict[str, int] = field(default_factory=dict)  # why connections did not open


@dataclass(frozen=True)
class WebSocket:
    """bench/ws.py's run: its own service (one worker), client processes, scenarios."""

    processes: int  # client processes
    watchers: int  # distinct users the connections sign in as
    participants: int  # of the one competition
    rate: float  # syncs per second, one competition
    many_rate: float  # syncs per second, many competitions
    seconds: float
    settle: float
    scenarios: list[WsScenario]


@dataclass
class Run:
    command: str
    started: datetime
    load: Load
    warmup: float
    workers: int
    hello_server: str
    service_server: str
    users: int
    rotation: int
    redis_version: str
    wrk_version: str
    rows: list[Row] = field(default_factory=list)
    million: Million | None = None
    analytics: Analytics | None = None
    ws: WebSocket | None = None
    rss_idle: dict[str, float] = field(default_factory=dict)
    rss_loaded: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    def results(self, key: str) -> list[Result]:
        return [row.result for row in self.rows if row.key == key]

    def rps(self, key: str) -> float | None:
        """Throughput of a row (the mean when it ran more than once, as the hello does)."""
        found = self.results(key)
        return sum(r.rps for r in found) / len(found) if found else None


# --- the machine ---------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown CPU"
    match = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    return match.group(1).strip() if match else platform.processor() or "unknown CPU"


def _memory() -> str:
    try:
        text = Path("/proc/meminfo").read_text()
    except OSError:
        return "unknown"
    match = re.search(r"^MemTotal:\s+(\d+) kB", text, re.M)
    return f"{int(match.group(1)) / 2**20:.1f} GiB" if match else "unknown"


def _os() -> str:
    try:
        text = Path("/etc/os-release").read_text()
    except OSError:
        return platform.system()
    match = re.search(r'^PRETTY_NAME="?([^"\n]+)"?$', text, re.M)
    return match.group(1) if match else platform.system()


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine_lines(run: Run) -> list[str]:
    packages = ", ".join(f"{label} {_version(dist)}" for label, dist in PACKAGES)
    return [
        f"- Machine: {os.cpu_count()} CPUs ({_cpu_model()}), {_memory()} RAM, {_os()}, "
        f"kernel {platform.release()}, Python {platform.python_version()}",
        f"- Packages: {packages}; embedded redis-server {run.redis_version}; wrk {run.wrk_version}",
    ]


# --- tables --------------------------------------------------------------------------


def _ms(value: float) -> str:
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def _share(part: float | None, whole: float | None) -> str:
    if part is None or not whole:
        return NONE
    ratio = part / whole
    return f"{ratio:.1%}" if ratio < 0.1 else f"{ratio:.0%}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    right = [i > 0 for i in range(len(header))]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        padded = [
            c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right, strict=True)
        ]
        return "| " + " | ".join(padded) + " |"

    rule = (
        "|"
        + "|".join(
            ("-" * (w + 1) + ":") if r else "-" * (w + 2)
            for w, r in zip(widths, right, strict=True)
        )
        + "|"
    )
    return [line(header), rule, *(line(r) for r in rows)]


def rows_table(run: Run) -> list[str]:
    health, hello = run.rps("health"), run.rps("hello")
    body = [
        [
            row.label,
            f"{row.result.rps:,.0f}",
            _ms(row.result.p50_ms),
            _ms(row.result.p99_ms),
            str(row.result.errors),
            _share(row.result.rps, health),
            _share(row.result.rps, hello),
        ]
        for row in run.rows
    ]
    header = ["row", "req/s", "p50 ms", "p99 ms", "errors", "vs /health", "vs bare hello"]
    return _table(header, body)


def million_table(m: Million) -> list[str]:
    body: list[list[str]] = []
    busy = m.busy.connections if m.busy else 0
    for label, result, in_flight in (
        ("`around=me&limit=10`", m.around, m.load.connections),
        ("rank: `offset=<random>&limit=10`", m.rank, m.load.connections),
        ("`around=me&limit=10`", m.around_busy, busy),
        ("rank: `offset=<random>&limit=10`", m.rank_busy, busy),
    ):
        if result is not None:
            cells = [
                str(in_flight),
                _ms(result.p50_ms),
                _ms(result.p99_ms),
                f"{result.rps:,.0f}",
                str(result.errors),
            ]
            body.append([label, *cells])
    lines = _table(["request", "in flight", "p50 ms", "p99 ms", "req/s", "errors"], body)
    return [
        *lines,
        "",
        f"Redis memory per participant: {m.bytes_per_participant:,.0f} bytes "
        f"(`used_memory` after the seeding minus before, over {m.participants:,}); "
        f"seeding took {m.seed_seconds:.1f} s ({m.participants / m.seed_seconds:,.0f} "
        "participants/s).",
    ]


def _opt_ms(value: float | None) -> str:
    return NONE if value is None else _ms(value)


ANALYTICS_PARTICIPANTS, ANALYTICS_DAYS = 10_000, 30  # the target: cold < 1 s
ANALYTICS_MS = 1000.0


def analytics_table(a: Analytics) -> list[str]:
    cold = [
        "cold: full view, right after a board change",
        "1",
        f"{len(a.cold_ms):,}",
        _ms(statistics.median(a.cold_ms)),
        NONE,
        _ms(max(a.cold_ms)),
        NONE,
        "0",
    ]
    body = [cold] if a.cold_ms else []
    for label, result in (
        ("warm: full view (service token)", a.warm),
        ("warm: summary view (participants' tokens)", a.warm_summary),
    ):
        if result is not None:
            body.append(
                [
                    label,
                    str(a.load.connections),
                    f"{result.requests:,}",
                    _ms(result.p50_ms),
                    _ms(result.p99_ms),
                    NONE,
                    f"{result.rps:,.0f}",
                    str(result.errors),
                ]
            )
    header = ["analytics request", "in flight", "requests", "p50 ms", "p99 ms", "max ms"]
    return _table([*header, "req/s", "errors"], body)


def analytics_target(a: Analytics | None) -> list[str]:
    """The issue's target, judged on the slowest cold request at full size."""
    label = (
        f"analytics for {ANALYTICS_PARTICIPANTS:,} participants over {ANALYTICS_DAYS} days "
        "answers under 1 s (cold)"
    )
    if a is None or not a.cold_ms:
        return _target(label, NONE, None)
    full = a.participants >= ANALYTICS_PARTICIPANTS and a.days >= ANALYTICS_DAYS
    if not full:
        label += f" (measured at {a.participants:,} x {a.days})"
    slowest = max(a.cold_ms)
    return _target(label, f"max {_ms(slowest)} ms", slowest < ANALYTICS_MS if full else None)


def analytics_lines(a: Analytics) -> list[str]:
    label, measured, verdict = analytics_target(a)
    rate = a.participant_days / a.seed_seconds if a.seed_seconds else 0.0
    rss = "" if a.rss_mb is None else f"; the worker's RSS after the row: {a.rss_mb:.1f} MB"
    return [
        f"`GET /fitness/analytics/{{id}}?limit=10` on a competition of {a.participants:,} "
        f"participants seeded through the engine's scripts in Redis pipelines: JOIN on the "
        f"window's first day, then one APPLY of each participant's {a.days} past days "
        "(log-normal steps around 7,000 a day, about one day in 25 not synced, a fixed seed). "
        f"The window is {a.window_days} days, {a.days + 1} of them elapsed (today included). "
        "Cold: one request at a time, each right after an APPLY moved the board's version, "
        "so the worker reads everything again (`scripts.ANALYTICS`) and computes the view "
        "(the answer's `event_id` is checked to be that change). Warm: the worker's cached "
        f"view under `{a.load.describe()}`, the full view with the service token, the "
        f"summary view rotating over {SAMPLE:,} participants' tokens.",
        "",
        *analytics_table(a),
        "",
        f"- Target: {label}: {measured}, {verdict}",
        f"- The worker's first analytics request (numpy imported then): {_ms(a.first_ms)} ms" + rss,
        f"- Seeding took {a.seed_seconds:.1f} s ({rate:,.0f} participant-days/s); Redis "
        f"memory per participant-day: {a.bytes_added / a.participant_days:,.0f} bytes "
        f"(`used_memory` after the seeding minus before, over {a.participant_days:,} "
        "participant-days: the competition's keys only, the board and entries included); "
        f"the seeded field raised {a.flags:,} flags.",
    ]


def ws_table(ws: WebSocket) -> list[str]:
    body = []
    for sc in ws.scenarios:
        opened = f"{sc.opened:,}" + (
            "" if sc.opened == sc.connections else f" of {sc.connections:,}"
        )
        kib = NONE if sc.kib_per_connection is None else f"{sc.kib_per_connection:.1f}"
        body.append(
            [
                sc.name,
                opened,
                f"{sc.competitions:,}",
                f"{sc.syncs:,}",
                f"{sc.deliveries:,}",
                f"{sc.lost:,}",
                _opt_ms(sc.p50_ms),
                _opt_ms(sc.p99_ms),
                _opt_ms(sc.max_ms),
                kib,
                f"{sc.rss_mb:.1f}",
            ]
        )
    header = [
        "scenario",
        "connections",
        "competitions",
        "syncs",
        "deliveries",
        "lost",
        "p50 ms",
        "p99 ms",
        "max ms",
        "KiB/idle conn",
        "server RSS MB",
    ]
    return _table(header, body)


def ws_notes(ws: WebSocket) -> list[str]:
    """What else a scenario saw: opening time, closes, disorder, refusals."""
    notes = []
    for sc in ws.scenarios:
        rate = sc.opened / sc.open_seconds if sc.open_seconds else 0.0
        parts = [f"opened in {sc.open_seconds:.1f} s ({rate:,.0f}/s)"]
        if sc.closed_by_server:
            parts.append(f"**{sc.closed_by_server:,} closed by the server**")
        if sc.out_of_order:
            parts.append(f"**{sc.out_of_order:,} score_update frames out of order or repeated**")
        if sc.received > sc.deliveries - sc.lost:
            parts.append(
                f"{sc.received - (sc.deliveries - sc.lost):,} deliveries beyond those expected"
            )
        for why, count in sorted(sc.failures.items()):
            parts.append(f"**{count:,} did not open: {why}**")
        notes.append(f"- {sc.name}: " + "; ".join(parts))
    return notes


def rss_table(run: Run) -> list[str]:
    body = [
        [name, f"{mb:.1f}", f"{run.rss_loaded[name]:.1f}" if name in run.rss_loaded else NONE]
        for name, mb in run.rss_idle.items()
    ]
    return _table(["process", "idle MB", "loaded MB"], body)


# --- SPEC §8 ---------------------------------------------------------------------------


def _target(label: str, measured: str, met: bool | None) -> list[str]:
    verdict = "not measured" if met is None else ("met" if met else "**missed**")
    return [label, measured, verdict]


def targets_table(run: Run) -> list[str]:
    health = run.rps("health")
    body: list[list[str]] = []
    for key, label, floor in (
        ("limit10", "leaderboard `limit=10` ≥ 70% of `/health`", 0.70),
        ("limit100", "leaderboard `limit=100` ≥ 50% of `/health`", 0.50),
        ("around", "leaderboard `around=me` ≥ 60% of `/health`", 0.60),
        ("sync1", "single-record sync ≥ 30% of `/health`", 0.30),
    ):
        rps = run.rps(key)
        met = None if rps is None or not health else rps / health >= floor
        body.append(_target(label, _share(rps, health), met))
    sync = run.results("sync1")
    body.append(
        _target(
            "single-record sync p99 < 50 ms at 64 connections"
            + ("" if run.load.connections == 64 else f" (measured at {run.load.connections})"),
            f"{_ms(sync[0].p99_ms)} ms" if sync else NONE,
            sync[0].p99_ms < 50 if sync else None,
        )
    )
    m = run.million
    at = f"{m.participants:,}" if m else "1,000,000"
    for name, result in (("rank", m.rank if m else None), ("`around=me`", m.around if m else None)):
        body.append(
            _target(
                f"{name} p99 < 10 ms at {at} participants (one request in flight)",
                f"{_ms(result.p99_ms)} ms" if result else NONE,
                result.p99_ms < 10 if result else None,
            )
        )
    workers = {k: v for k, v in run.rss_idle.items() if k.startswith("worker")}
    top = max(workers.values()) if workers else None
    body.append(
        _target(
            "idle worker RSS < 80 MB (aim 60 MB)",
            f"{top:.1f} MB" if top is not None else NONE,
            top < 80 if top is not None else None,
        )
    )
    body.extend(ws_targets(run.ws))
    return _table(["SPEC §8 target", "measured", ""], body)


WS_ONE, WS_MANY = "one competition", "many competitions"
WS_CONNECTIONS = 10_000  # SPEC §8: open connections on one process
WS_P99_MS = 1000.0
WS_KIB = 20.0


def ws_targets(ws: WebSocket | None) -> list[list[str]]:
    """SPEC §8's WebSocket targets, judged on the one-competition scenario: every open
    connection watches the board the syncs change."""
    one = next((sc for sc in ws.scenarios if sc.name == WS_ONE), None) if ws else None
    if one is None:
        return [
            _target(f"{WS_CONNECTIONS:,} open WebSocket connections on one process", NONE, None),
            _target("a score change reaches all of them, p99 < 1 s", NONE, None),
            _target("< 20 KiB per idle WebSocket connection", NONE, None),
        ]
    full = one.connections >= WS_CONNECTIONS
    size = "" if full else f" (measured at {one.connections:,})"
    opened = f"{one.opened:,} open" + (
        "" if one.opened == one.connections else f" of {one.connections:,}"
    )
    reached = (
        NONE
        if one.p99_ms is None
        else f"p99 {_ms(one.p99_ms)} ms, {one.lost:,} of {one.deliveries:,} lost"
    )
    kib = one.kib_per_connection
    return [
        _target(
            f"{WS_CONNECTIONS:,} open WebSocket connections on one process{size}",
            opened,
            (one.opened >= WS_CONNECTIONS and one.closed_by_server == 0) if full else None,
        ),
        _target(
            f"a score change reaches all of them, p99 < 1 s{size}",
            reached,
            None if one.p99_ms is None else one.p99_ms < WS_P99_MS and one.lost == 0,
        ),
        _target(
            f"< 20 KiB per idle WebSocket connection{size}",
            NONE if kib is None else f"{kib:.1f} KiB",
            None if kib is None else kib < WS_KIB,
        ),
    ]


def _faster_than_health(run: Run) -> list[str]:
    """A caveat when a route outruns `/health`: its share of `/health` then flatters it."""
    health = run.rps("health")
    faster = [
        r.label
        for r in run.rows
        if r.key not in ("hello", "health") and health and r.result.rps > health
    ]
    if not faster:
        return []
    one = len(faster) == 1
    return [
        "",
        f"Note: {', '.join(faster)} ran faster than `/health` in this run, so "
        + (
            "its share of `/health` overstates it"
            if one
            else "their shares of `/health` overstate them"
        )
        + "; the shares of the bare hello do not.",
    ]


def render(run: Run) -> str:
    when = run.started.strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"## Latest `make bench` run: {when}",
        "",
        f"- Command: `{run.command}` ({run.seconds:.0f} s in all)",
        *machine_lines(run),
        f"- Service: `healthcomp serve --workers {run.workers}` on {run.service_server}, "
        f"`ENVIRONMENT=production`, embedded Redis, rate limits on ({int(RATE_LIMIT):,}/min "
        "per user and per IP: never reached); seeded through the API: a public steps competition, "
        f"{run.users} participants with {SYNCED_DAYS} synced days each",
        f"- Bare hello: `bench/hello.py` on {run.hello_server}, the same worker count",
        f"- Each row: `{run.load.describe()}`"
        + (f" after a {run.warmup:g} s warm-up" if run.warmup else "")
        + f", loopback; reads and syncs rotate over {run.rotation} participants' tokens; "
        "syncs change the score on every request",
    ]
    if run.rows:
        lines += ["", *rows_table(run), *_faster_than_health(run)]
    if run.million is not None:
        m = run.million
        lines += [
            "",
            f"### A competition of {m.participants:,} participants",
            "",
            f"Seeded through the engine's scripts (JOIN, then APPLY of one day) in Redis "
            f"pipelines; `{m.load.describe()}`"
            + (f" and `{m.busy.describe()}`" if m.busy else "")
            + f", rotating over {SAMPLE:,} participants' tokens (and random offsets for "
            "rank). With one request in flight the latency is what the query costs on a "
            "board this size (the SPEC §8 target is judged there); with more, the worker is "
            "saturated and p99 is mostly time queued behind the others. The memory is the "
            "competition's keys only: the participants' own keys (records, days, windows) "
            "are not written.",
            "",
            *million_table(m),
        ]
    if run.analytics is not None:
        a = run.analytics
        lines += [
            "",
            f"### Analytics ({a.participants:,} participants x {a.days} days)",
            "",
            *analytics_lines(a),
        ]
    if run.ws is not None:
        lines += ["", "### WebSocket", "", *ws_lines(run.ws)]
    if run.rss_idle:
        lines += [
            "",
            "### Resident memory of the service's Python processes",
            "",
            "Idle: after the start and the seeding, before any load; loaded: after the rows.",
            "",
            *rss_table(run),
        ]
    lines += ["", "### SPEC §8", "", *targets_table(run)]
    return "\n".join(lines) + "\n"


def ws_lines(ws: WebSocket) -> list[str]:
    return [
        "`python -m bench.ws`: its own service (`healthcomp serve --workers 1`, production "
        "configuration, embedded Redis, `RLIMIT_NOFILE` raised to its hard limit); the "
        f"connections from {ws.processes} client process{'es' if ws.processes != 1 else ''} "
        "(bench/wsclient.py, a minimal RFC 6455 client on asyncio protocols and uvloop), "
        f"signed in as {ws.watchers:,} users who watch without taking part. Opened, then "
        f"{ws.settle:g} s idle: the worker's RSS growth over the connections is the memory per "
        "idle connection. Then single-record syncs through the REST API, "
        f"{ws.rate:g}/s for {ws.seconds:g} s on the one competition ({ws.participants} "
        f"participants), {ws.many_rate:g}/s for {ws.seconds:g} s rotating over the many; "
        "latency is the arrival of the `score_update` frame on a connection minus the time "
        "the sync request was sent, over every (connection, sync) pair; every connection of "
        "a competition must get every sync to it, or it counts as lost.",
        "",
        *ws_table(ws),
        "",
        *ws_notes(ws),
    ]


def write_docs(path: Path, block: str) -> None:
    """Replaces what is between the markers; adds them (before the first `## ` section,
    below the title and its introduction) when the file has none."""
    text = path.read_text() if path.exists() else "# Benchmark results\n\n"
    section = f"{BEGIN}\n{block.rstrip()}\n{END}"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + section + rest.split(END, 1)[1]
    else:
        first = re.search(r"^## ", text, re.M)
        at = first.start() if first else len(text)
        text = text[:at] + section + "\n\n" + text[at:]
    path.write_text(text)
