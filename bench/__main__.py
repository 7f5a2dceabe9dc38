"""`make bench`: the service in production configuration against a bare ASGI hello, one table.

Starts `healthcomp serve` (embedded Redis, a fresh data directory, a free loopback port,
rate limits on) and `bench/hello.py` on the same server and worker count; seeds a public
competition of 200 participants through the API; drives each row with wrk; fills a
competition of 1,000,000 participants through the engine's scripts for rank and
`around=me` latency and Redis memory per participant; reads the workers' RSS idle and
loaded. Fills a competition of 10,000 participants x 30 days the same way
(bench/analytics.py) for the analytics route, cold (right after a board change) and
warm (cached, under load). Then the WebSocket tool (bench/ws.py) on a service of its
own: 10,000 live leaderboard connections, the latency of a sync's `score_update` to
each of them, memory per idle connection. Prints the report and writes it into
docs/BENCHMARKS.md between its markers.

    python -m bench [--workers N] [--server uvicorn|granian] [--only limit10,sync1]
    python -m bench --quick        # seconds, for the test suite; writes nothing

Rows (`--only` names): hello, health, limit10, limit100, around, sync1, sync7, stats,
analytics, million, ws. Loopback only.
"""

from __future__ import annotations

import argparse
import secrets
import shlex
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn

import httpx
import redis

from bench import analytics, million, report, seed, servers, wrk, ws
from bench.report import Row, Run
from bench.wrk import Load, Request
from healthcomp.core.embedded import EmbeddedRedis
from healthcomp.core.settings import Settings

ROWS = (
    "hello",
    "health",
    "limit10",
    "limit100",
    "around",
    "sync1",
    "sync7",
    "stats",
    "analytics",
    "million",
    "ws",
)
ROTATION = 50  # participants whose tokens a row's requests rotate over
BOARD = "bench-board"
MILLION = "bench-million"
ANALYTICS = "bench-analytics"
# Steps the sync rows send: above every seeded day, so the score moves on every request.
STEPS_FIRST = seed.SEED_STEPS[1] + 1
STEPS_SPAN = 100_000 - STEPS_FIRST + 1


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="a tiny run, for the test suite")
    parser.add_argument("--seconds", type=float, help="per row (default 8; quick 1)")
    parser.add_argument("--connections", type=int, help="wrk -c (default 64; quick 8)")
    parser.add_argument("--threads", type=int, default=1, help="wrk -t (default 1)")
    parser.add_argument("--workers", type=int, default=1, help="server workers (default 1)")
    parser.add_argument(
        "--server",
        choices=["uvicorn", "granian"],
        default=Settings.model_fields["server"].default,
        help="for the service and the hello (default: what `healthcomp serve` runs)",
    )
    parser.add_argument("--users", type=int, help="participants of the board (200; quick 20)")
    parser.add_argument(
        "--participants", type=int, help="of the big competition (1,000,000; quick 2,000)"
    )
    parser.add_argument("--skip-million", action="store_true")
    parser.add_argument(
        "--analytics-participants",
        type=int,
        help="of the analytics competition, 30 days each (10,000; quick 1,000)",
    )
    parser.add_argument("--skip-analytics", action="store_true", help="no analytics row")
    parser.add_argument(
        "--ws-connections", type=int, help="WebSocket connections (10,000; quick 200)"
    )
    parser.add_argument("--skip-ws", action="store_true", help="no WebSocket row")
    parser.add_argument("--only", help="comma-separated rows: " + ",".join(ROWS))
    parser.add_argument(
        "--write",
        action=argparse.BooleanOptionalAction,
        help="write docs/BENCHMARKS.md (default: unless --quick)",
    )
    parser.add_argument("--output", type=Path, default=servers.ROOT / "docs" / "BENCHMARKS.md")
    args = parser.parse_args(argv)
    quick = args.quick
    args.seconds = args.seconds or (1.0 if quick else 8.0)
    args.connections = args.connections or (8 if quick else 64)
    args.users = args.users or (20 if quick else 200)
    args.participants = args.participants or (2_000 if quick else 1_000_000)
    args.analytics_participants = args.analytics_participants or (1_000 if quick else 10_000)
    args.warmup = 0.0 if quick else 1.0
    args.write = (not quick) if args.write is None else args.write
    only = set(ROWS) if args.only is None else {x.strip() for x in args.only.split(",")}
    if unknown := only - set(ROWS):
        parser.error(f"--only: unknown rows {sorted(unknown)}; choose from {','.join(ROWS)}")
    if args.skip_million:
        only.discard("million")
    if args.skip_analytics:
        only.discard("analytics")
    if args.analytics_participants < 1:
        parser.error("--analytics-participants must be positive")
    if args.skip_ws:
        only.discard("ws")
    if args.ws_connections is not None and args.ws_connections < 1:
        parser.error("--ws-connections must be positive")
    args.only = only
    return args


@dataclass(frozen=True)
class Case:
    key: str
    label: str
    requests: list[Request]
    expect: Callable[[Any], None] | None = None  # checks the first request's `data`


def _sync_body(days: list[date]) -> str:
    record = '{"date": "%s", "steps": $N, "source": "bench"}'
    if len(days) == 1:
        return record % days[0].isoformat()
    return '{"records": [' + ", ".join(record % d.isoformat() for d in days) + "]}"


def service_cases(board: seed.Board, today: date, users: int) -> list[Case]:
    rotation = board.users[:ROTATION]
    tokens = [board.tokens[u] for u in rotation]
    page = f"{seed.API}/leaderboard/{board.competition_id}"
    sync = f"{seed.API}/fitness/sync"
    week = [today - timedelta(days=d) for d in range(6, -1, -1)]

    def rows(n: int) -> Callable[[Any], None]:
        def expect(data: Any) -> None:
            if len(data["entries"]) != n:
                raise RuntimeError(f"{page} answered {len(data['entries'])} rows, not {n}")

        return expect

    return [
        Case("health", "`GET /health`", [Request("/health")]),
        Case("limit10", "leaderboard `limit=10`", [Request(f"{page}?limit=10", t) for t in tokens]),
        Case(
            "limit100",
            "leaderboard `limit=100`",
            [Request(f"{page}?limit=100", t) for t in tokens],
            rows(min(100, users)),
        ),
        Case(
            "around",
            "leaderboard `around=me&limit=10`",
            [Request(f"{page}?around=me&limit=10", t) for t in tokens],
        ),
        Case(
            "sync1",
            "sync, 1 record",
            [Request(sync, t, _sync_body([today])) for t in tokens],
        ),
        Case("sync7", "sync, 7 records", [Request(sync, t, _sync_body(week)) for t in tokens]),
        Case(
            "stats",
            "`GET /fitness/stats/{user}`",
            [Request(f"{seed.API}/fitness/stats/{u}", board.tokens[u]) for u in rotation],
        ),
    ]


def check_once(base: str, case: Case) -> None:
    """The row's first request answers 2xx (and what `expect` wants) before wrk runs it."""
    first = case.requests[0]
    headers = seed.auth(first.token) if first.token else {}
    with httpx.Client(base_url=base, timeout=30) as client:
        if first.body is None:
            response = client.get(first.path, headers=headers)
        else:
            body = first.body.replace("$N", str(STEPS_FIRST))
            headers["Content-Type"] = "application/json"
            response = client.post(first.path, content=body, headers=headers)
    if not response.is_success:
        raise RuntimeError(
            f"{case.label}: {first.path} answered {response.status_code}: {response.text[:500]}"
        )
    if case.expect is not None:
        case.expect(response.json()["data"])


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Bench:
    def __init__(self, args: argparse.Namespace, wrk_path: str, tmp: Path) -> None:
        self.args = args
        self.wrk = wrk_path
        self.tmp = tmp
        self.load = Load(args.seconds, args.connections, args.threads)
        self.secret = secrets.token_hex(32)

    def measure(self, base: str, case: Case, load: Load, counter: tuple[int, int]) -> Row:
        check_once(base, case)
        if self.args.warmup:
            warm = Load(self.args.warmup, load.connections, load.threads)
            wrk.run(self.wrk, base, case.requests, warm, self.tmp, counter)
        result = wrk.run(self.wrk, base, case.requests, load, self.tmp, counter)
        _log(
            f"  {case.label}: {result.rps:,.0f} req/s, p50 {result.p50_ms:.2f} ms, "
            f"p99 {result.p99_ms:.2f} ms, {result.errors} errors"
        )
        return Row(case.key, case.label, result)

    def run(self, command: str) -> Run:
        started = time.monotonic()
        running: list[servers.Server] = []
        try:
            result = self.run_with(command, running)
        finally:
            for server in running:
                server.stop()
        if "ws" in self.args.only:
            # Alone on the machine: the other servers have stopped.
            result.ws = ws.measure(self.ws_options(), self.tmp)
        result.seconds = time.monotonic() - started
        return result

    def run_with(self, command: str, running: list[servers.Server]) -> Run:
        """Everything but stopping the servers, which are added to `running` as they start."""
        args = self.args
        when = datetime.now(UTC)
        data_dir = self.tmp / "data"
        data_dir.mkdir()
        service_server = args.server if servers.service_has_server_option() else None
        hello = None
        if "hello" in args.only:
            hello = servers.start_hello(args.server, args.workers, self.tmp / "hello.log")
            running.append(hello)
        service = servers.start_service(
            data_dir, self.secret, args.workers, service_server, self.tmp / "service.log"
        )
        running.append(service)
        for server in running:
            server.wait_ready()
        redis_url = EmbeddedRedis.url_of_running(data_dir)
        if redis_url is None:
            raise RuntimeError(f"no embedded Redis URL in {data_dir}")
        with redis.Redis.from_url(redis_url) as client:
            redis_version = str(client.info("server")["redis_version"])
        result = Run(
            command=command,
            started=when,
            load=self.load,
            warmup=args.warmup,
            workers=args.workers,
            hello_server=args.server,
            service_server=service_server or "its default server (serve has no --server)",
            users=args.users,
            rotation=min(ROTATION, args.users),
            redis_version=redis_version,
            wrk_version=wrk.version(self.wrk),
        )
        today = when.date()
        _log(f"seeding {args.users} participants through the API")
        board = seed.seed_board(service.base, self.secret, BOARD, args.users, today)
        result.rss_idle = self.rss(service)
        hello_case = Case("hello", "bare hello", [Request("/")])
        if hello is not None:
            first = self.measure(hello.base, hello_case, self.load, (0, 1))
            result.rows.append(Row("hello", "bare hello (first)", first.result))
        for case in service_cases(board, today, args.users):
            if case.key in args.only:
                counter = (STEPS_FIRST, STEPS_SPAN)
                result.rows.append(self.measure(service.base, case, self.load, counter))
        if hello is not None:
            last = self.measure(hello.base, hello_case, self.load, (0, 1))
            result.rows.append(Row("hello", "bare hello (last)", last.result))
        result.rss_loaded = self.rss(service)
        # Before the million: its board would make Redis's background saves longer.
        if "analytics" in args.only:
            result.analytics = self.analytics(service, redis_url, today)
        if "million" in args.only:
            result.million = self.million(service.base, redis_url, today)
        return result

    def ws_options(self) -> ws.Options:
        args = self.args
        options = ws.Options.quick() if args.quick else ws.Options()
        if args.ws_connections is not None:
            options.connections = args.ws_connections
        options.processes = min(options.processes, options.connections)
        if servers.service_has_server_option():
            options.server = args.server
        return options

    def rss(self, service: servers.Server) -> dict[str, float]:
        procs = servers.python_processes(service.proc.pid)
        return {name: servers.rss_mb(pid) for pid, name in procs.items()}

    def million(self, base: str, redis_url: str, today: date) -> report.Million:
        n = self.args.participants
        _log(f"seeding {n:,} participants through Redis pipelines")
        prefix = Settings.model_construct().key_prefix  # the service runs on the defaults
        seeded = million.seed(base, self.secret, redis_url, prefix, MILLION, n, today)
        page = f"{seed.API}/leaderboard/{MILLION}"
        tokens = list(seeded.tokens.values())
        around = Case(
            "million",
            f"{n:,}: around=me",
            [Request(f"{page}?around=me&limit=10", t) for t in tokens],
        )
        offsets = million.rank_offsets(n)
        rank = Case(
            "million",
            f"{n:,}: rank",
            [
                Request(f"{page}?offset={o}&limit=10", tokens[i % len(tokens)])
                for i, o in enumerate(offsets)
            ],
        )
        # One request in flight: what a query costs on a board this size. Eight: the
        # same under a load that saturates the worker (p99 is then mostly queueing).
        seconds = min(self.args.seconds, 5.0)
        alone = Load(seconds, 1, self.args.threads)
        busy = Load(seconds, 8, self.args.threads)
        return report.Million(
            participants=n,
            seed_seconds=seeded.seconds,
            bytes_per_participant=seeded.bytes_per_participant,
            around=self.measure(base, around, alone, (0, 1)).result,
            rank=self.measure(base, rank, alone, (0, 1)).result,
            load=alone,
            around_busy=self.measure(base, around, busy, (0, 1)).result,
            rank_busy=self.measure(base, rank, busy, (0, 1)).result,
            busy=busy,
        )

    def analytics(self, service: servers.Server, redis_url: str, today: date) -> report.Analytics:
        n = self.args.analytics_participants
        base = service.base
        _log(f"seeding {n:,} participants x {analytics.DAYS} days through Redis pipelines")
        prefix = Settings.model_construct().key_prefix  # the service runs on the defaults
        board = analytics.Board(base, self.secret, redis_url, prefix, ANALYTICS, today)
        try:
            seeded = board.seed(n)
            cold = board.cold(seeded)
        finally:
            board.close()
        _log(
            f"  analytics, cold: p50 {cold.p50_ms:.1f} ms, max {cold.max_ms:.1f} ms "
            f"(first {cold.first_ms:.1f} ms)"
        )
        url = analytics.path(ANALYTICS)
        service_token = seed.service_token(self.secret)
        full = Case("analytics", "analytics, full view", [Request(url, service_token)])
        summary = Case(
            "analytics",
            "analytics, summary view",
            [Request(url, token) for token in seeded.tokens.values()],
        )
        load = Load(min(self.args.seconds, 5.0), 8, self.args.threads)
        warm = self.measure(base, full, load, (0, 1)).result
        warm_summary = self.measure(base, summary, load, (0, 1)).result
        workers = [mb for name, mb in self.rss(service).items() if name.startswith("worker")]
        return report.Analytics(
            participants=n,
            days=seeded.days,
            window_days=seeded.window_days,
            participant_days=seeded.participant_days,
            seed_seconds=seeded.seconds,
            bytes_added=seeded.bytes_added,
            first_ms=cold.first_ms,
            cold_ms=cold.latencies_ms,
            flags=cold.flags,
            warm=warm,
            warm_summary=warm_summary,
            load=load,
            rss_mb=max(workers) if workers else None,
        )


def _terminate(signum: int, _frame: object) -> NoReturn:
    # `finally` blocks stop the servers and remove the temporary directory.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _terminate)
    args = parse_args(argv)
    command = shlex.join(["python", "-m", "bench", *(sys.argv[1:] if argv is None else argv)])
    wrk_path = wrk.ensure_wrk()
    try:
        with tempfile.TemporaryDirectory(prefix="hc-bench-") as tmp:
            run = Bench(args, wrk_path, Path(tmp)).run(command)
    except (RuntimeError, httpx.HTTPError, redis.RedisError) as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    block = report.render(run)
    print(block)
    if args.write:
        report.write_docs(args.output, block)
        _log(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
