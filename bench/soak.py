"""The soak: minutes of mixed load on one service, its memory and descriptors sampled.

Starts `healthcomp serve` as in production (one worker, embedded Redis, a fresh data
directory, rate limits on but out of reach), seeds a public competition through the
API, then runs bench/mixedload.py for `--minutes`: batch syncs from every participant,
board reads (`limit=10`, `limit=100`, `around=me`) and `--watchers` WebSocket clients
that reconnect with `since` if dropped. Every `--every` seconds it reads, from /proc,
the worker's resident memory (VmRSS) and open file descriptors, and the embedded
redis-server's memory. At the end it checks what the service holds (every sync
answered 200 is there, each batch whole, the board equal to the days, every watcher at
the board's last event) and prints a table and a verdict against the bounds:

* no error: every sync and read answered 2xx, no WebSocket closed or refused, no event
  skipped or repeated;
* after the first minute (warm-up: caches, pools, the allocator's arenas), the worker's
  RSS grows by at most `--rss-bound` MB and its descriptors by at most `--fd-bound`.

    nice -n 10 python -m bench.soak --minutes 10
    python -m bench.soak --minutes 1 --watchers 100     # a quick look

Exit status 0 when the verdict holds, 1 when not. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench import seed, servers
from bench.mixedload import Book, MixedLoad, check_syncs, settle_board
from bench.ws import raise_nofile

CID = "soak"
WARM_UP = 60.0  # seconds before the baseline sample


@dataclass(frozen=True)
class Sample:
    at: float  # seconds since the load started
    rss_mb: float
    fds: int
    redis_rss_mb: float
    watchers: int  # connected
    syncs: int  # answered so far
    sync_errors: int
    reads: int
    read_errors: int
    sync_p99_ms: float  # over the syncs answered since the previous sample


def fds_of(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def redis_pid(data_dir: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int((data_dir / "redis" / "redis.pid").read_text())
    return None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--participants", type=int, default=200)
    parser.add_argument("--watchers", type=int, default=1000)
    parser.add_argument("--sync-rate", type=float, default=20.0, help="batch syncs a second")
    parser.add_argument("--read-rate", type=float, default=20.0, help="board reads a second")
    parser.add_argument("--every", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--rss-bound", type=float, default=10.0, help="MB after the warm-up")
    parser.add_argument("--fd-bound", type=int, default=16, help="descriptors after the warm-up")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--server", choices=("uvicorn", "granian"), default=None)
    parser.add_argument("--json", type=Path, help="also write every sample here")
    return parser.parse_args(argv)


async def _join_all(base: str, secret: str, users: list[str]) -> None:
    gate = asyncio.Semaphore(16)
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:

        async def join(user: str) -> None:
            async with gate:
                token = seed.user_token(secret, user, f"Soak {user}")
                resp = await http.post(
                    f"{seed.API}/competitions/{CID}/join", headers=seed.auth(token)
                )
                seed.check(resp, f"{user} joining")

        await asyncio.gather(*(join(u) for u in users))


async def run(options: argparse.Namespace, tmp: Path) -> int:
    secret = secrets.token_urlsafe(48)
    data = tmp / "data"
    data.mkdir()
    service = servers.start_service(
        data, secret, options.workers, options.server, tmp / "service.log"
    )
    try:
        service.wait_ready()
        workers = servers.python_processes(service.proc.pid)
        worker = max(workers)  # with one worker, the serve process itself
        today = datetime.now(UTC).date()
        with httpx.Client(base_url=service.base, timeout=30) as client:
            seed.create_competition(client, seed.service_token(secret), CID, "Soak", today)
        users = [f"soak-u{i:04d}" for i in range(options.participants)]
        await _join_all(service.base, secret, users)
        days = [(today - timedelta(days=1)).isoformat(), today.isoformat()]
        start = (today - timedelta(days=seed.DAYS_BEFORE)).isoformat()
        book = Book(CID, users, days, start=start)
        tokens = {u: seed.user_token(secret, u, f"Soak {u}") for u in users}
        watchers = [
            seed.user_token(secret, f"soak-w{i:05d}", f"Watcher {i}")
            for i in range(options.watchers)
        ]
        load = MixedLoad(
            [service.base],
            book,
            tokens.__getitem__,
            sync_rate=options.sync_rate,
            read_rate=options.read_rate,
            watchers=watchers,
        )
        print(
            f"soak: {options.minutes:g} min, {len(users)} participants, "
            f"{options.watchers} watchers, {options.sync_rate:g} batch syncs/s "
            f"({len(book.days) + 1} records each), {options.read_rate:g} reads/s; "
            f"worker pid {worker}",
            file=sys.stderr,
            flush=True,
        )
        await load.start(watchers_within=120)
        samples: list[Sample] = []
        seen = 0
        end = load.started + options.minutes * 60
        try:
            while True:
                now = time.monotonic()
                rpid = redis_pid(data)
                recent = load.attempts[seen:]
                seen = len(load.attempts)
                took = sorted(a.took for a in recent)
                samples.append(
                    Sample(
                        at=now - load.started,
                        rss_mb=servers.rss_mb(worker),
                        fds=fds_of(worker),
                        redis_rss_mb=servers.rss_mb(rpid) if rpid else 0.0,
                        watchers=load.watchers.connected(),
                        syncs=len(load.attempts),
                        sync_errors=sum(not a.ok for a in load.attempts),
                        reads=len(load.reads),
                        read_errors=sum(
                            r.status is None or not 200 <= r.status < 300 for r in load.reads
                        ),
                        sync_p99_ms=1000 * took[int(0.99 * (len(took) - 1))] if took else 0.0,
                    )
                )
                if now >= end:
                    break
                await asyncio.sleep(min(options.every, max(0.0, end - now)))
            await load.stop()
            check = await check_syncs(service.base, book, tokens.__getitem__)
            service_token = seed.service_token(secret)
            wrong = await settle_board(service.base, book, check, service_token, 15)
            async with httpx.AsyncClient(base_url=service.base, timeout=30) as http:
                resp = await http.get(
                    f"{seed.API}/leaderboard/{CID}?limit=1", headers=seed.auth(service_token)
                )
                final = int(seed.check(resp, "the board")["event_id"])
            late = await load.watchers.settle(final, 15)
            summary = load.summary()
        finally:
            await load.close()
    finally:
        service.stop()
    return report(options, samples, summary, check, wrong, late, final)


def report(
    options: argparse.Namespace,
    samples: list[Sample],
    summary: dict[str, Any],
    check: Any,
    wrong: dict[str, Any],
    late: list[int],
    final: int,
) -> int:
    if options.json:
        options.json.write_text(
            orjson.dumps([s.__dict__ for s in samples], option=orjson.OPT_INDENT_2).decode()
        )
    step = max(1, round(60 / options.every)) if options.minutes >= 3 else 1
    shown = samples[::step]
    if shown[-1] is not samples[-1]:
        shown.append(samples[-1])
    print(
        "| t (min) | worker RSS (MB) | worker fds | redis RSS (MB) | WS open "
        "| syncs | sync errors | reads | read errors | sync p99 (ms) |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for s in shown:
        print(
            f"| {s.at / 60:.1f} | {s.rss_mb:.1f} | {s.fds} | {s.redis_rss_mb:.1f} "
            f"| {s.watchers} | {s.syncs:,} | {s.sync_errors} | {s.reads:,} "
            f"| {s.read_errors} | {s.sync_p99_ms:.0f} |"
        )
    base = next((s for s in samples if s.at >= WARM_UP), samples[0])
    last = samples[-1]
    after = [s for s in samples if s.at >= base.at]
    rss_growth = last.rss_mb - base.rss_mb
    rss_peak = max(s.rss_mb for s in after) - base.rss_mb
    fd_growth = last.fds - base.fds
    fd_peak = max(s.fds for s in after) - base.fds
    slope = 0.0
    if len(after) >= 3:
        xs = [s.at / 60 for s in after]
        slope = statistics.linear_regression(xs, [s.rss_mb for s in after]).slope
    ws = summary.get("ws", {})
    errors = {
        "syncs not 2xx": last.sync_errors,
        "reads not 2xx": last.read_errors,
        "WebSocket closes": sum(v for k, v in ws.get("closes", {}).items() if k != "1000"),
        "WebSocket refusals": sum(ws.get("refused", {}).values()),
        "events skipped": ws.get("gaps", 0),
        "events repeated": ws.get("repeats", 0),
        "acknowledged syncs lost": len(set(check.lost)),
        "batches held in part": len(set(check.torn)),
        "board entries off the days": len(wrong),
        "watchers behind the last event": len(late),
    }
    print()
    print(
        f"after the {WARM_UP / 60:g}-minute warm-up (t = {base.at / 60:.1f} min): worker RSS "
        f"{base.rss_mb:.1f} -> {last.rss_mb:.1f} MB ({rss_growth:+.1f}, peak {rss_peak:+.1f}; "
        f"trend {slope:+.2f} MB/min), fds {base.fds} -> {last.fds} ({fd_growth:+d}, peak "
        f"{fd_peak:+d}); redis RSS {base.redis_rss_mb:.1f} -> {last.redis_rss_mb:.1f} MB"
    )
    print(
        f"load: {summary['syncs']:,} batch syncs ({summary['acknowledged']:,} answered 200, "
        f"p99 {summary['sync_p99_s'] * 1000:.0f} ms, max {summary['sync_max_s'] * 1000:.0f} ms), "
        f"{summary['reads']:,} reads (max {summary['read_max_s'] * 1000:.0f} ms), "
        f"{ws.get('watchers', 0)} watchers ({ws.get('events', 0):,} events received, "
        f"{ws.get('reconnects', 0)} reconnects), final event id {final}"
    )
    print("errors: " + ", ".join(f"{k} {v}" for k, v in errors.items()))
    if last.sync_errors or last.read_errors:
        print(f"answers: syncs {summary['sync_answers']}, reads {summary['read_answers']}")
    bounded = rss_growth <= options.rss_bound and fd_growth <= options.fd_bound
    ok = bounded and not any(errors.values())
    print(
        f"verdict: {'PASS' if ok else 'FAIL'} (bounds: RSS +{options.rss_bound:g} MB, fds "
        f"+{options.fd_bound} after the warm-up; no error)"
    )
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    options = parse_args(argv)
    raise_nofile(options.watchers + 512)
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    try:
        with tempfile.TemporaryDirectory(prefix="hc-soak-") as tmp, runner:
            return runner.run(run(options, Path(tmp)))
    except (RuntimeError, httpx.HTTPError) as exc:
        print(f"bench.soak: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
