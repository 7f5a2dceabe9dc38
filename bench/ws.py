"""The WebSocket load tool: SPEC §8's live-leaderboard targets against a real service.

Starts `healthcomp serve` (one worker, production configuration, embedded Redis) with
`RLIMIT_NOFILE` raised to its hard limit, seeds through the REST API, then per scenario:

1. reads the worker's RSS, opens N connections to `/ws/leaderboard/{id}` from client
   processes (bench/wsclient.py: a minimal RFC 6455 client, cheap per frame), waits for
   each one's `connected` and snapshot frames, lets them idle, reads the RSS again:
   the growth over N is the memory per idle connection;
2. sends single-record syncs through `POST /api/v1/fitness/sync` at a steady rate, each
   from a participant with a new step count, and notes when each request was sent and
   the score it answered; every client process notes when each `score_update` frame
   arrives on each connection;
3. matches frames to syncs by competition, user and score (the sync answers the new
   score of each competition), and prints the latency (arrival minus send) over every
   (connection, sync) pair, and what was lost: a connection must get every sync to its
   competition.

Scenarios: "one competition" (all N connections on one board of 200 participants) and
"many competitions" (N spread over 100 boards, the syncs rotating over them).

    python -m bench.ws [--connections 10000] [--processes 2] [--rate 2] [--seconds 10]
    python -m bench.ws --quick          # 200 connections, a second of syncs

`python -m bench` runs it as its `ws` row. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import multiprocessing
import resource
import secrets
import signal
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from multiprocessing.connection import Connection as Pipe
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench import report, seed, servers
from bench.report import WS_MANY, WS_ONE, WebSocket, WsScenario
from bench.wsclient import Connection, HandshakeError

BOARD = "ws-board"
MANY = "ws-c{:03d}"  # the many competitions
MANY_USER = "ws-c{:03d}-u{}"  # their participants, none in two competitions
WATCHER = "ws-w{:05d}"  # who the connections sign in as: not participants
STEPS_FIRST = seed.SEED_STEPS[1] + 1  # above every seeded day: each sync moves the score
FD_MARGIN = 256  # descriptors beside the connections (files, pipes, Redis, HTTP)
_SCORE = b'{"type":"score_update"'


@dataclass
class Options:
    connections: int = 10_000
    processes: int = 2  # client processes
    participants: int = 200  # of the one competition
    competitions: int = 100  # the many
    per_competition: int = 5  # participants of each of the many
    watchers: int = 1_000  # distinct users the connections sign in as (at most N)
    rate: float = 2.0  # syncs per second, one competition
    many_rate: float = 20.0  # syncs per second over the many
    seconds: float = 10.0  # of syncs, per scenario
    settle: float = 2.0  # idle seconds before the RSS is read
    drain: float = 10.0  # seconds after the last sync for its frames to arrive
    concurrency: int = 200  # handshakes in flight per client process
    timeout: float = 120.0  # for one connection to open (its snapshot included)
    scenarios: tuple[str, ...] = ("one", "many")
    server: str | None = None  # `healthcomp serve --server`, when it has the option

    @classmethod
    def quick(cls) -> Options:
        return cls(
            connections=200,
            processes=1,
            participants=20,
            competitions=10,
            per_competition=2,
            rate=5.0,
            many_rate=10.0,
            seconds=1.0,
            settle=0.5,
            drain=5.0,
            timeout=30.0,
        )


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def raise_nofile(needed: int) -> int:
    """The soft RLIMIT_NOFILE raised to the hard one (children inherit it); fails
    early, with the fix, when even that cannot hold `needed` descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    if soft != resource.RLIM_INFINITY and soft < needed:
        raise RuntimeError(
            f"{needed:,} descriptors are needed in one process but RLIMIT_NOFILE is "
            f"{soft:,} (hard); raise it (`ulimit -Hn`, limits.conf) or ask for fewer "
            "connections"
        )
    return int(soft)


# --- the client processes ---------------------------------------------------------------


class _State:
    """Per connection: how far it got, and the last event id it saw."""

    __slots__ = ("error", "last", "ready", "stage")

    def __init__(self, ready: asyncio.Future[None]) -> None:
        self.ready = ready
        self.stage = 0  # 0: waiting for `connected`; 1: for the snapshot; 2: live
        self.last = 0
        self.error: str | None = None


class Watchers:
    """One client process's connections and what arrived on them."""

    def __init__(self) -> None:
        self.host = ""
        self.port = 0
        self.conns: list[Connection] = []
        # A frame is encoded once per competition, so its bytes name its event.
        self.known: dict[bytes, tuple[str, int]] = {}
        self.meta: dict[tuple[str, int], tuple[str, Any]] = {}  # -> (user id, score)
        self.arrivals: defaultdict[tuple[str, int], list[float]] = defaultdict(list)
        self.received = 0
        self.recording = False
        self.out_of_order = 0
        self.other = 0

    # Called for every message on every connection: keep it short.
    def on_message(self, conn: Connection, payload: bytes, now: float) -> None:
        state: _State = conn.state  # type: ignore[assignment]
        if payload.startswith(_SCORE):
            key = self.known.get(payload)
            if key is None:
                key = self._learn(payload)
            if key[1] <= state.last:
                self.out_of_order += 1
            state.last = key[1]
            if self.recording:
                self.arrivals[key].append(now)
                self.received += 1
            return
        if state.stage == 2:
            self.other += 1
            return
        data = orjson.loads(payload)
        kind = data.get("type")
        if kind == "error":
            state.error = str(data.get("message") or data.get("error"))
        elif state.stage == 0 and kind == "connected":
            state.stage = 1
            state.last = int(data["event_id"])
        elif state.stage == 1 and kind == "leaderboard_update" and data.get("snapshot"):
            state.stage = 2
            if not state.ready.done():
                state.ready.set_result(None)

    def _learn(self, payload: bytes) -> tuple[str, int]:
        data = orjson.loads(payload)
        key = (str(data["competition_id"]), int(data["event_id"]))
        self.meta[key] = (str(data["user_id"]), data["score"])
        self.known[payload] = key
        return key

    async def _open(self, path: str, seconds: float) -> Connection:
        """One connection, once its `connected` and snapshot frames are in."""
        loop = asyncio.get_running_loop()
        made: list[Connection] = []

        def factory() -> Connection:
            conn = Connection(self.host, self.port, path, self.on_message)
            conn.state = _State(loop.create_future())
            made.append(conn)
            return conn

        try:
            async with asyncio.timeout(seconds):
                _, conn = await loop.create_connection(factory, self.host, self.port)
                await asyncio.shield(conn.upgraded)
                state: _State = conn.state  # type: ignore[assignment]
                await asyncio.wait((state.ready, conn.closed), return_when=asyncio.FIRST_COMPLETED)
        except BaseException as exc:
            for conn in made:
                conn.abort()
            if isinstance(exc, TimeoutError):
                raise TimeoutError(f"not open after {seconds:g} s") from None
            raise
        if not state.ready.done():
            conn.abort()
            raise ConnectionError(state.error or conn.error or f"closed with {conn.close_code}")
        return conn

    async def open(
        self, host: str, port: int, paths: list[tuple[str, str]], concurrency: int, seconds: float
    ) -> Any:
        """Connections to `host:port`, each path's once, `concurrency` opening at a time."""
        self.host, self.port = host, port
        started = time.monotonic()
        gate = asyncio.Semaphore(concurrency)
        failures: Counter[str] = Counter()
        opened: Counter[str] = Counter()

        async def one(cid: str, path: str) -> None:
            async with gate:
                try:
                    conn = await self._open(path, seconds)
                except (OSError, HandshakeError, TimeoutError) as exc:
                    failures[f"{type(exc).__name__}: {exc}"[:160]] += 1
                    return
            self.conns.append(conn)
            opened[cid] += 1

        await asyncio.gather(*(one(cid, path) for cid, path in paths))
        return dict(opened), dict(failures), time.monotonic() - started

    async def record(self) -> Any:
        self.known.clear()
        self.meta.clear()
        self.arrivals.clear()
        self.received = 0
        self.out_of_order = 0
        self.recording = True
        return None

    async def count(self) -> Any:
        return self.received

    async def collect(self) -> Any:
        self.recording = False
        closed = Counter(
            str(c.close_code or c.error or "dropped") for c in self.conns if c.closed.done()
        )
        arrivals = {key: times for key, times in self.arrivals.items()}
        return arrivals, dict(self.meta), self.out_of_order, dict(closed)

    async def close(self) -> Any:
        conns, self.conns = self.conns, []
        for conn in conns:
            conn.close()
        pending = [c.closed for c in conns if not c.closed.done()]
        if pending:
            await asyncio.wait(pending, timeout=15)
        for conn in conns:
            if not conn.closed.done():
                conn.abort()
        return len(conns)

    async def serve(self, pipe: Pipe) -> None:
        """Commands from the parent, one at a time, each answered on the pipe. A thread
        reads the pipe (blocking: the event loop would make its socket non-blocking, and
        a long message would then come apart)."""
        loop = asyncio.get_running_loop()
        inbox: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()

        def read() -> None:
            while True:
                try:
                    message = pipe.recv()
                except (EOFError, OSError):
                    message = ("quit",)  # the parent went
                loop.call_soon_threadsafe(inbox.put_nowait, message)
                if message[0] == "quit":
                    return

        threading.Thread(target=read, name="commands", daemon=True).start()
        commands: dict[str, Callable[..., Any]] = {
            "open": self.open,
            "record": self.record,
            "count": self.count,
            "collect": self.collect,
            "close": self.close,
        }
        while True:
            name, *args = await inbox.get()
            if name == "quit":
                await self.close()
                return
            pipe.send(await commands[name](*args))


def _client_main(pipe: Pipe) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us through the pipe
    try:
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(Watchers().serve(pipe))


class Clients:
    """The client processes, asked the same thing at once."""

    def __init__(self, processes: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.pipes: list[Pipe] = []
        self.procs: list[Any] = []
        for i in range(processes):
            mine, theirs = context.Pipe()
            proc = context.Process(
                target=_client_main, args=(theirs,), name=f"ws-client-{i}", daemon=True
            )
            proc.start()
            theirs.close()
            self.pipes.append(mine)
            self.procs.append(proc)

    def ask(self, name: str, *per_process: list[Any], timeout: float = 900.0) -> list[Any]:
        """Sends `name` to every process (with its own arguments, if given) and waits for
        all the answers."""
        for i, pipe in enumerate(self.pipes):
            pipe.send((name, *(args[i] for args in per_process)))
        answers = []
        deadline = time.monotonic() + timeout
        for pipe, proc in zip(self.pipes, self.procs, strict=True):
            while not pipe.poll(0.5):
                if not proc.is_alive():
                    raise RuntimeError(f"{proc.name} exited with {proc.exitcode}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{proc.name} did not answer {name!r} in {timeout:.0f} s")
            answers.append(pipe.recv())
        return answers

    def stop(self) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(OSError):
                pipe.send(("quit",))
        for proc in self.procs:
            proc.join(20)
            if proc.is_alive():
                proc.kill()
                proc.join()
        for pipe in self.pipes:
            pipe.close()


# --- seeding and syncs --------------------------------------------------------------------


# A scenario's competitions: id -> its participants' tokens by user id, in join order.
Boards = dict[str, dict[str, str]]


async def _seed_many(base: str, secret: str, options: Options, today: date) -> Boards:
    """The many competitions, public, each with its own few participants (no history)."""
    service = seed.service_token(secret)
    cids = [MANY.format(j) for j in range(options.competitions)]
    with httpx.Client(base_url=base, timeout=30) as client:
        for cid in cids:
            seed.create_competition(client, service, cid, f"WebSocket bench {cid}", today)
    many = {
        cid: {
            MANY_USER.format(j, k): seed.user_token(secret, MANY_USER.format(j, k), f"{cid} {k}")
            for k in range(options.per_competition)
        }
        for j, cid in enumerate(cids)
    }
    gate = asyncio.Semaphore(16)
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:

        async def join(cid: str, uid: str, token: str) -> None:
            async with gate:
                answer = await client.post(
                    f"{seed.API}/competitions/{cid}/join", headers=seed.auth(token)
                )
                seed.check(answer, f"{uid} joining {cid}")

        await asyncio.gather(
            *(join(cid, uid, token) for cid, users in many.items() for uid, token in users.items())
        )
    return many


def seed_scenario(base: str, secret: str, name: str, options: Options, today: date) -> Boards:
    if name == "one":
        board = seed.seed_board(base, secret, BOARD, options.participants, today)
        return {BOARD: {uid: board.tokens[uid] for uid in board.users}}
    many: Boards = asyncio.run(_seed_many(base, secret, options, today))
    return many


@dataclass(frozen=True)
class Sent:
    cid: str
    user: str
    score: Any
    sent: float  # monotonic, just before the request
    answered: float


async def drive(
    base: str, plan: list[tuple[str, str, str]], rate: float, today: date, first: int
) -> list[Sent]:
    """One sync per plan entry (competition, user, token), started at `rate` per second
    whether or not the previous ones have been answered; the i-th sends `first + i`
    steps for today."""
    url = f"{seed.API}/fitness/sync"
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:

        async def one(i: int, cid: str, user: str, token: str) -> Sent:
            body = orjson.dumps({"date": today.isoformat(), "steps": first + i, "source": "phone"})
            headers = {**seed.auth(token), "Content-Type": "application/json"}
            sent = time.monotonic()
            answer = await client.post(url, content=body, headers=headers)
            answered = time.monotonic()
            data = seed.check(answer, f"{user} syncing")
            scores = {c["competition_id"]: c["score"] for c in data["competitions"]}
            if cid not in scores:
                raise RuntimeError(f"the sync of {user} did not change {cid}: {data}")
            return Sent(cid, user, scores[cid], sent, answered)

        start = time.monotonic() + 0.05
        tasks = []
        for i, (cid, user, token) in enumerate(plan):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, cid, user, token)))
        return await asyncio.gather(*tasks)


def _quantile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


# --- one run --------------------------------------------------------------------------------


class Tool:
    def __init__(self, options: Options, tmp: Path) -> None:
        self.options = options
        self.tmp = tmp
        self.secret = secrets.token_hex(32)
        self.today = datetime.now(UTC).date()
        self.steps = 0  # syncs sent so far: each one's step count is new

    def run(self) -> WebSocket:
        o = self.options
        per_process = math.ceil(o.connections / o.processes)
        raise_nofile(per_process + FD_MARGIN)
        clients = Clients(o.processes)
        try:
            scenarios = [self._fresh(name, clients) for name in o.scenarios]
        finally:
            clients.stop()
        return WebSocket(
            processes=o.processes,
            watchers=min(o.watchers, o.connections),
            participants=o.participants,
            rate=o.rate,
            many_rate=o.many_rate,
            seconds=o.seconds,
            settle=o.settle,
            scenarios=scenarios,
        )

    def _fresh(self, name: str, clients: Clients) -> WsScenario:
        """A scenario on a service of its own: memory freed by an earlier scenario's
        connections would otherwise be reused, and the RSS would not grow with these."""
        o = self.options
        data_dir = self.tmp / f"ws-{name}"
        data_dir.mkdir()
        log = self.tmp / f"ws-{name}.log"
        service = servers.start_service(data_dir, self.secret, 1, o.server, log)
        try:
            service.wait_ready()
            if name == "one":
                _log(f"ws: seeding a competition of {o.participants} participants")
            else:
                _log(
                    f"ws: seeding {o.competitions} competitions of {o.per_competition} participants"
                )
            boards = seed_scenario(service.base, self.secret, name, o, self.today)
            worker = self._worker_pid(service)
            self._warm_up(clients, service, boards)
            return self._scenario(name, clients, service, boards, worker)
        finally:
            service.stop()

    def _worker_pid(self, service: servers.Server) -> int:
        procs = servers.python_processes(service.proc.pid)
        workers = [pid for pid, name in procs.items() if name.startswith("worker")]
        if len(workers) != 1:
            raise RuntimeError(f"expected one worker process, found {procs}")
        return workers[0]

    def _paths(self, cids: list[str], n: int) -> list[tuple[str, str]]:
        """N connections spread evenly over the competitions, signed in as the watchers."""
        watchers = min(self.options.watchers, n)
        tokens = [
            seed.user_token(self.secret, WATCHER.format(i), f"Watcher {i}") for i in range(watchers)
        ]
        paths = []
        for i in range(n):
            cid = cids[i % len(cids)]
            paths.append((cid, f"/ws/leaderboard/{cid}?token={tokens[i % watchers]}"))
        return paths

    def _open(
        self, clients: Clients, service: servers.Server, paths: list[tuple[str, str]]
    ) -> tuple[Counter[str], Counter[str], float]:
        """Opened connections by competition, failures by reason, and the seconds taken."""
        o = self.options
        p = o.processes
        answers = clients.ask(
            "open",
            [servers.HOST] * p,
            [service.port] * p,
            [paths[i::p] for i in range(p)],
            [o.concurrency] * p,
            [o.timeout] * p,
        )
        opened: Counter[str] = Counter()
        failures: Counter[str] = Counter()
        seconds = 0.0
        for got, failed, took in answers:
            opened.update(got)
            failures.update(failed)
            seconds = max(seconds, took)
        return opened, failures, seconds

    def _plan(self, boards: Boards, count: int) -> list[tuple[str, str, str]]:
        """Syncs rotating over the competitions, and within each over its participants."""
        cids = list(boards)
        plan = []
        for i in range(count):
            cid = cids[i % len(cids)]
            users = list(boards[cid])
            uid = users[(i // len(cids)) % len(users)]
            plan.append((cid, uid, boards[cid][uid]))
        return plan

    def _sync(self, base: str, plan: list[tuple[str, str, str]], rate: float) -> list[Sent]:
        # Step counts never repeat and only grow, so every sync moves its user's score.
        first = STEPS_FIRST + self.steps
        self.steps += len(plan)
        return asyncio.run(drive(base, plan, rate, self.today, first))

    def _warm_up(self, clients: Clients, service: servers.Server, boards: Boards) -> None:
        """A few connections and a sync first: code paths and caches loaded before the
        first RSS reading."""
        self._open(clients, service, self._paths(list(boards), min(50, self.options.connections)))
        self._sync(service.base, self._plan(boards, 1), 1.0)
        time.sleep(0.5)
        clients.ask("close")
        time.sleep(0.5)

    def _scenario(
        self, name: str, clients: Clients, service: servers.Server, boards: Boards, worker: int
    ) -> WsScenario:
        o = self.options
        title = WS_ONE if name == "one" else WS_MANY
        cids = list(boards)
        rate = o.rate if name == "one" else o.many_rate
        count = max(1, round(rate * o.seconds))
        before = servers.rss_mb(worker)
        _log(f"ws: {title}: opening {o.connections:,} connections over {len(cids)} competitions")
        paths = self._paths(cids, o.connections)
        opened, failures, open_seconds = self._open(clients, service, paths)
        total = sum(opened.values())
        time.sleep(o.settle)
        idle = servers.rss_mb(worker)
        kib = (idle - before) * 1024 / total if total else None
        _log(
            f"ws: {title}: {total:,} open in {open_seconds:.1f} s, RSS {before:.1f} -> "
            f"{idle:.1f} MB" + (f" ({kib:.1f} KiB each)" if kib is not None else "")
        )
        for why, n in failures.items():
            _log(f"ws: {title}: {n:,} did not open: {why}")

        clients.ask("record")
        _log(f"ws: {title}: {count} syncs at {rate:g}/s")
        sent = self._sync(service.base, self._plan(boards, count), rate)
        expected = sum(opened[s.cid] for s in sent)
        deadline = max(s.sent for s in sent) + o.drain
        while time.monotonic() < deadline:
            if sum(clients.ask("count")) >= expected:
                break
            time.sleep(0.1)
        rss = servers.rss_mb(worker)

        by_key = {(s.cid, s.user, s.score): s for s in sent}
        received: Counter[Sent] = Counter()
        latencies: list[float] = []
        out_of_order = 0
        closed: Counter[str] = Counter()
        for arrivals, meta, disorder, gone in clients.ask("collect"):
            out_of_order += disorder
            closed.update(gone)
            for key, times in arrivals.items():
                user, score = meta[key]
                match = by_key.get((key[0], user, score))
                if match is None:
                    continue  # not one of ours
                received[match] += len(times)
                latencies.extend(t - match.sent for t in times)
        lost = sum(max(0, opened[s.cid] - received[s]) for s in sent)
        ms = sorted(1000 * x for x in latencies)
        answered = sorted(1000 * (s.answered - s.sent) for s in sent)
        result = WsScenario(
            name=title,
            connections=o.connections,
            opened=total,
            competitions=len(cids),
            syncs=len(sent),
            deliveries=expected,
            received=sum(received.values()),
            lost=lost,
            p50_ms=_quantile(ms, 0.50) if ms else None,
            p99_ms=_quantile(ms, 0.99) if ms else None,
            max_ms=ms[-1] if ms else None,
            kib_per_connection=kib,
            rss_mb=idle,
            open_seconds=open_seconds,
            closed_by_server=sum(closed.values()),
            out_of_order=out_of_order,
            failures=dict(failures),
        )
        timing = (
            f"p50 {_quantile(ms, 0.5):.1f} ms, p99 {_quantile(ms, 0.99):.1f} ms, "
            f"max {ms[-1]:.1f} ms; "
            if ms
            else ""
        )
        _log(
            f"ws: {title}: {result.received:,} of {expected:,} delivered, {lost:,} lost; "
            + timing
            + f"syncs answered in p50 {_quantile(answered, 0.5):.1f} ms, "
            f"max {answered[-1]:.1f} ms; RSS after them {rss:.1f} MB"
            + (f"; closed by the server: {dict(closed)}" if closed else "")
        )
        clients.ask("close")
        return result


def measure(options: Options, tmp: Path) -> WebSocket:
    return Tool(options, tmp).run()


# --- the command ----------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ws",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    d = Options()
    parser.add_argument("--quick", action="store_true", help="a tiny run, for the test suite")
    parser.add_argument("--connections", type=int, help=f"(default {d.connections:,})")
    parser.add_argument("--processes", type=int, help=f"client processes (default {d.processes})")
    parser.add_argument("--rate", type=float, help=f"syncs/s, one competition (default {d.rate:g})")
    parser.add_argument(
        "--many-rate", type=float, help=f"syncs/s over the many (default {d.many_rate:g})"
    )
    parser.add_argument(
        "--seconds", type=float, help=f"of syncs per scenario (default {d.seconds:g})"
    )
    parser.add_argument("--competitions", type=int, help=f"the many (default {d.competitions})")
    parser.add_argument(
        "--watchers", type=int, help=f"distinct users connecting (default {d.watchers:,})"
    )
    parser.add_argument(
        "--settle", type=float, help=f"idle seconds before the RSS (default {d.settle:g})"
    )
    parser.add_argument("--scenarios", help="comma-separated: one,many (default both)")
    parser.add_argument(
        "--server", choices=["uvicorn", "granian"], help="passed to `healthcomp serve`"
    )
    args = parser.parse_args(argv)
    options = Options.quick() if args.quick else Options()
    for name in (
        "connections",
        "processes",
        "rate",
        "many_rate",
        "seconds",
        "competitions",
        "watchers",
        "settle",
    ):
        value = getattr(args, name)
        if value is not None:
            if value <= 0:
                parser.error(f"--{name.replace('_', '-')} must be positive")
            setattr(options, name, value)
    if args.scenarios:
        chosen = tuple(x.strip() for x in args.scenarios.split(","))
        if unknown := set(chosen) - {"one", "many"}:
            parser.error(f"--scenarios: unknown {sorted(unknown)}")
        options.scenarios = chosen
    if args.server is not None and servers.service_has_server_option():
        options.server = args.server
    options.processes = min(options.processes, options.connections)
    return options


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    options = parse_args(argv)
    try:
        with tempfile.TemporaryDirectory(prefix="hc-bench-ws-") as tmp:
            result = measure(options, Path(tmp))
    except (RuntimeError, httpx.HTTPError) as exc:
        print(f"bench.ws: {exc}", file=sys.stderr)
        return 1
    print("\n".join(report.ws_table(result)))
    print()
    print("\n".join(report.ws_notes(result)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
