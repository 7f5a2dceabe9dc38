"""A steady mixed load against running `healthcomp serve` processes, every outcome kept.

Made for the fault tests (tests/faults/) and the soak (bench/soak.py): while a fault is
injected, it shows what each request was answered and what the service holds afterwards.

* **Syncs.** Each user sends batch syncs one after another (never two at once), about
  every `len(users) / sync_rate` seconds, to the next service in turn. Attempt `k` of a
  user is one batch: the board's days, each with `steps = c * 10 + j` (`c` names the
  attempt, `j` the day), and one day of its own before the competition (its journal
  day, `steps = c * 10 + 9`), which no later attempt writes. So afterwards
  `check_syncs` can say, per user, whether every attempt answered 2xx is held (its
  journal day), and whether each batch was stored whole or not at all (the board's
  days hold the latest attempt whose journal day is there).
* **Reads.** Leaderboard pages (`limit=10`, `limit=100`, `around=me`) at `read_rate`.
* **WebSocket watchers** (bench/wsclient.py) on the board, spread over the services.
  Each checks that the board's events arrive in order, each once (a snapshot, on
  connecting or on a resync, restarts the count); when its connection ends it connects
  again, to the next service, with `?since=<the last event id it has>`.

Loopback only. Every request's answer (status, error code, time taken) is recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from bench.wsclient import Connection, HandshakeError

API = "/api/v1"
SYNC = f"{API}/fitness/sync"
MAX_DAYS = 9  # the board's days in a batch: `steps = c * 10 + j`, j < 9
JOURNAL_INDEX = 9  # the last digit of a journal day's steps
JOURNAL_DAYS = 300  # journal days per user, reused after that many attempts
MAX_ATTEMPT = 9_999  # steps stay within the day's cap (100,000)

_BOARD = b'{"type":"leaderboard_update"'
_SNAPSHOT = b'"snapshot":true'
# Frames that are not board events, or repeat one (a personal rank_change has the
# event id of the score_update it follows).
_NOT_EVENTS = frozenset({"connected", "leaderboard_update", "rank_change", "heartbeat", "pong"})


def code_of(attempt: int) -> int:
    """What an attempt's values carry: its number, wrapped to stay under the cap."""
    return attempt % MAX_ATTEMPT + 1


def steps_of(attempt: int, day_index: int) -> int:
    return code_of(attempt) * 10 + day_index


def attempt_of(steps: int) -> tuple[int, int]:
    """(the attempt's code, the day's index) from a stored value."""
    return steps // 10, steps % 10


@dataclass(frozen=True)
class Attempt:
    """One request and its answer. `status` is None when no answer came."""

    user: str
    k: int
    base: str
    status: int | None
    error: str | None  # the envelope's `error`, or the exception when no answer
    retry_after: str | None
    started: float  # monotonic
    took: float

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclass
class Book:
    """Every sync attempt, per user, across loads (a module's tests share one). `days`
    are the board's days each batch sends (inside the competition); the journal days
    are the JOURNAL_DAYS before `start`, the competition's first day (by default the
    first of `days`), so that they count on no board."""

    cid: str
    users: list[str]
    days: list[str]
    start: str | None = None
    attempts: dict[str, list[Attempt]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 1 <= len(self.days) <= MAX_DAYS:
            raise ValueError(f"1 to {MAX_DAYS} days per batch")
        self.days = sorted(self.days)
        self.start = self.start or self.days[0]
        for user in self.users:
            self.attempts.setdefault(user, [])

    def next_k(self, user: str) -> int:
        return len(self.attempts[user]) + 1

    def all(self) -> list[Attempt]:
        return [a for user in self.users for a in self.attempts[user]]

    def journal_day(self, k: int) -> str:
        first = date.fromisoformat(self.start or self.days[0])
        return (first - timedelta(days=1 + (k - 1) % JOURNAL_DAYS)).isoformat()

    def first_day(self) -> str:
        first = date.fromisoformat(self.start or self.days[0])
        return (first - timedelta(days=JOURNAL_DAYS)).isoformat()

    def body(self, k: int) -> dict[str, Any]:
        records = [
            {"date": day, "steps": steps_of(k, j), "source": "phone"}
            for j, day in enumerate(self.days)
        ]
        records.append(
            {"date": self.journal_day(k), "steps": steps_of(k, JOURNAL_INDEX), "source": "phone"}
        )
        return {"records": records}


@dataclass(frozen=True)
class Read:
    base: str
    what: str
    status: int | None
    error: str | None
    started: float
    took: float


def _answer(resp: httpx.Response) -> tuple[str | None, str | None]:
    if resp.is_success:
        return None, None
    code: str | None = None
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        code = orjson.loads(resp.content).get("error")
    return code or f"status {resp.status_code}", resp.headers.get("retry-after")


# --- the WebSocket watchers ---------------------------------------------------------------


@dataclass
class WatchState:
    """One watcher: where it is in the board's events, and what went wrong."""

    token: str
    turn: int  # which service it connects to next
    last: int | None = None  # the last event id it has (None: none yet)
    awaiting_snapshot: bool = False
    connects: int = 0
    resumed: int = 0  # reconnections that got the missed events
    resynced: int = 0  # reconnections (or slow spells) answered with a snapshot
    gaps: int = 0  # an event id skipped without a snapshot
    repeats: int = 0  # an event id at or below one it had
    events: int = 0
    refused: Counter[str] = field(default_factory=Counter)  # error frames, failed connects
    closes: Counter[str] = field(default_factory=Counter)


class Watchers:
    """`n` watchers of one board, each reconnecting with `since` until `stop()`."""

    def __init__(
        self, bases: Callable[[], Sequence[str]], cid: str, tokens: Sequence[str], limit: int = 10
    ) -> None:
        self.bases = bases
        self.cid = cid
        self.limit = limit
        self.states = [WatchState(token, i) for i, token in enumerate(tokens)]
        self.running = False
        self._tasks: list[asyncio.Task[None]] = []
        self._conns: dict[int, Connection] = {}
        self.opened = asyncio.Event()

    def start(self, concurrency: int = 100) -> None:
        self.running = True
        gate = asyncio.Semaphore(concurrency)
        self._tasks = [asyncio.create_task(self._run(i, gate)) for i in range(len(self.states))]

    def connected(self) -> int:
        return sum(1 for c in self._conns.values() if not c.closed.done())

    async def wait_connected(self, within: float) -> None:
        deadline = time.monotonic() + within
        while self.connected() < len(self.states):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.connected()} of {len(self.states)} watchers connected")
            await asyncio.sleep(0.05)

    async def _run(self, i: int, gate: asyncio.Semaphore) -> None:
        state = self.states[i]
        delay = 0.1
        while self.running:
            bases = self.bases()
            base = bases[state.turn % len(bases)]
            state.turn += 1
            async with gate:
                conn = await self._connect(i, base)
            if conn is None:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            delay = 0.1
            await conn.closed
            state.closes[str(conn.close_code or conn.error or "dropped")] += 1
            if self.running:
                await asyncio.sleep(0.05 + random.random() * 0.1)

    async def _connect(self, i: int, base: str) -> Connection | None:
        state = self.states[i]
        url = urlsplit(base)
        host, port = url.hostname or "127.0.0.1", url.port or 80
        path = f"/ws/leaderboard/{self.cid}?token={state.token}&limit={self.limit}"
        if state.last is not None:
            path += f"&since={state.last}"
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(10):
                _, conn = await loop.create_connection(
                    lambda: Connection(host, port, path, self._on_message), host, port
                )
                conn.state = i
                self._conns[i] = conn
                await conn.upgraded
        except (OSError, HandshakeError, TimeoutError) as exc:
            state.refused[type(exc).__name__] += 1
            return None
        state.connects += 1
        return conn

    def _on_message(self, conn: Connection, payload: bytes, _now: float) -> None:
        state: WatchState = self.states[conn.state]  # type: ignore[index]
        if payload.startswith(_BOARD):
            if _SNAPSHOT not in payload[:200]:
                return  # a coalesced board: the events carry the order
            data = orjson.loads(payload)
            if data.get("resync"):
                state.resynced += 1
            state.last = int(data["event_id"])
            state.awaiting_snapshot = False
            return
        data = orjson.loads(payload)
        kind = data.get("type")
        if kind == "connected":
            if data.get("resumed"):
                state.resumed += 1
                state.last = int(data["event_id"])
            else:
                state.awaiting_snapshot = True
            return
        if kind == "error":
            state.refused[str(data.get("error"))] += 1
            return
        if kind in _NOT_EVENTS or "event_id" not in data:
            return
        event_id = int(data["event_id"])
        state.events += 1
        if state.last is None or state.awaiting_snapshot:
            return  # before the snapshot: it covers this event
        if event_id <= state.last:
            state.repeats += 1
            return
        if event_id != state.last + 1:
            state.gaps += 1
        state.last = event_id

    def behind(self, event_id: int) -> list[int]:
        """Watchers whose last event id is not `event_id`."""
        return [i for i, s in enumerate(self.states) if s.last != event_id]

    async def settle(self, event_id: int, within: float) -> list[int]:
        deadline = time.monotonic() + within
        while True:
            late = self.behind(event_id)
            if not late or time.monotonic() > deadline:
                return late
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        self.running = False
        for conn in self._conns.values():
            conn.close()
        pending = [c.closed for c in self._conns.values() if not c.closed.done()]
        if pending:
            await asyncio.wait(pending, timeout=5)
        for conn in self._conns.values():
            if not conn.closed.done():
                conn.abort()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def summary(self) -> dict[str, Any]:
        closes: Counter[str] = Counter()
        refused: Counter[str] = Counter()
        for s in self.states:
            closes.update(s.closes)
            refused.update(s.refused)
        return {
            "watchers": len(self.states),
            "connects": sum(s.connects for s in self.states),
            "reconnects": sum(max(0, s.connects - 1) for s in self.states),
            "resumed": sum(s.resumed for s in self.states),
            "resynced": sum(s.resynced for s in self.states),
            "events": sum(s.events for s in self.states),
            "gaps": sum(s.gaps for s in self.states),
            "repeats": sum(s.repeats for s in self.states),
            "closes": dict(closes),
            "refused": dict(refused),
        }


# --- the load -------------------------------------------------------------------------------


class MixedLoad:
    """Syncs, reads and watchers against `bases` (which a test may change: `use`)."""

    def __init__(
        self,
        bases: Sequence[str],
        book: Book,
        token: Callable[[str], str],
        *,
        sync_rate: float = 40.0,
        read_rate: float = 20.0,
        watchers: Sequence[str] = (),
        timeout: float = 30.0,
    ) -> None:
        self._bases = list(bases)
        self.book = book
        self.headers = {u: {"Authorization": f"Bearer {token(u)}"} for u in book.users}
        self.sync_rate = sync_rate
        self.read_rate = read_rate
        self.timeout = timeout
        self.reads: list[Read] = []
        self.attempts: list[Attempt] = []  # this load's, in the order they were answered
        self.watchers = Watchers(lambda: self._bases, book.cid, watchers)
        self._clients: dict[str, httpx.AsyncClient] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._running = False
        self._turn = 0
        self.started = 0.0
        self.in_flight = 0  # syncs sent and not answered yet

    def bases(self) -> list[str]:
        return list(self._bases)

    def use(self, bases: Sequence[str]) -> None:
        """Send from now on to these services (a killed one out, a new one in)."""
        self._bases = list(bases)

    def _client(self, base: str) -> httpx.AsyncClient:
        client = self._clients.get(base)
        if client is None:
            limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
            client = self._clients[base] = httpx.AsyncClient(
                base_url=base, timeout=self.timeout, limits=limits
            )
        return client

    def _next_base(self) -> str:
        self._turn += 1
        return self._bases[self._turn % len(self._bases)]

    async def start(self, watchers_within: float = 30.0) -> None:
        self._running = True
        self.started = time.monotonic()
        if self.watchers.states:
            self.watchers.start()
            await self.watchers.wait_connected(watchers_within)
        users = self.book.users
        period = len(users) / self.sync_rate if self.sync_rate > 0 else 0
        if period:
            for i, user in enumerate(users):
                offset = period * i / len(users)
                self._tasks.append(asyncio.create_task(self._syncs(user, period, offset)))
        if self.read_rate > 0:
            workers = max(1, min(8, int(self.read_rate // 5)))
            for w in range(workers):
                task = self._reads(workers / self.read_rate, w / self.read_rate)
                self._tasks.append(asyncio.create_task(task))

    async def _syncs(self, user: str, period: float, offset: float) -> None:
        await asyncio.sleep(offset)
        due = time.monotonic()
        while self._running:
            await self.sync_once(user)
            due = max(due + period, time.monotonic() - period)
            await asyncio.sleep(max(0.0, due - time.monotonic()))

    async def sync_once(self, user: str, base: str | None = None) -> Attempt:
        book = self.book
        k = book.next_k(user)
        base = base or self._next_base()
        started = time.monotonic()
        status: int | None = None
        retry_after: str | None = None
        self.in_flight += 1
        try:
            resp = await self._client(base).post(
                SYNC, json=book.body(k), headers=self.headers[user]
            )
            status = resp.status_code
            error, retry_after = _answer(resp)
        except httpx.HTTPError as exc:
            error = type(exc).__name__
        finally:
            self.in_flight -= 1
        attempt = Attempt(
            user, k, base, status, error, retry_after, started, time.monotonic() - started
        )
        book.attempts[user].append(attempt)
        self.attempts.append(attempt)
        return attempt

    async def _reads(self, period: float, offset: float) -> None:
        await asyncio.sleep(offset)
        kinds = ("limit=10", "limit=100", "around=me&limit=10")
        due = time.monotonic()
        i = 0
        while self._running:
            i += 1
            user = random.choice(self.book.users)
            what = kinds[i % len(kinds)]
            base = self._next_base()
            started = time.monotonic()
            status: int | None = None
            try:
                resp = await self._client(base).get(
                    f"{API}/leaderboard/{self.book.cid}?{what}", headers=self.headers[user]
                )
                status = resp.status_code
                error, _ = _answer(resp)
            except httpx.HTTPError as exc:
                error = type(exc).__name__
            self.reads.append(Read(base, what, status, error, started, time.monotonic() - started))
            due = max(due + period, time.monotonic() - period)
            await asyncio.sleep(max(0.0, due - time.monotonic()))

    async def stop(self) -> None:
        """Stops the syncs and reads (each finishes the request it has in flight); the
        watchers stay connected, for `settle`."""
        self._running = False
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def close(self) -> None:
        await self.stop()
        await self.watchers.stop()
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()

    def summary(self, since: float | None = None) -> dict[str, Any]:
        syncs = [a for a in self.attempts if since is None or a.started >= since]
        reads = [r for r in self.reads if since is None or r.started >= since]
        return {
            "syncs": len(syncs),
            "acknowledged": sum(a.ok for a in syncs),
            "sync_answers": dict(Counter(_label(a.status, a.error) for a in syncs)),
            "sync_max_s": round(max((a.took for a in syncs), default=0.0), 3),
            "sync_p99_s": round(_quantile([a.took for a in syncs], 0.99), 3),
            "reads": len(reads),
            "read_answers": dict(Counter(_label(r.status, r.error) for r in reads)),
            "read_max_s": round(max((r.took for r in reads), default=0.0), 3),
            **({"ws": self.watchers.summary()} if self.watchers.states else {}),
        }


def _label(status: int | None, error: str | None) -> str:
    if status is None:
        return f"no answer ({error})"
    return str(status) if error is None else f"{status} {error}"


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# --- what the service holds afterwards ------------------------------------------------------


@dataclass
class SyncCheck:
    """Per user, what its days hold against what it was answered."""

    users: int = 0
    acknowledged: int = 0  # attempts answered 2xx
    lost: list[str] = field(default_factory=list)  # a 2xx attempt whose journal day is not held
    torn: list[str] = field(default_factory=list)  # a batch held in part
    unknown: list[str] = field(default_factory=list)  # values no attempt sent
    stored: dict[str, int | None] = field(default_factory=dict)  # user -> code on the board days
    unanswered_stored: int = 0  # attempts not answered 2xx whose batch is held (they ran)
    ran_unanswered: set[tuple[str, int]] = field(default_factory=set)  # those (user, k)


async def check_syncs(base: str, book: Book, token: Callable[[str], str]) -> SyncCheck:
    """Reads each user's days (GET /fitness/history, as the user) and checks them
    against the attempts: every attempt answered 2xx has its journal day held (or a
    later attempt's that reuses it), and the board's days hold, all of them, the latest
    attempt whose journal day is held: a batch is stored whole or not at all."""
    out = SyncCheck(users=len(book.users))
    gate = asyncio.Semaphore(16)
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:

        async def one(user: str) -> None:
            async with gate:
                resp = await http.get(
                    f"{API}/fitness/history/{user}?from={book.first_day()}&to={book.days[-1]}",
                    headers={"Authorization": f"Bearer {token(user)}"},
                )
            resp.raise_for_status()
            held = {d["date"]: d["steps"] for d in resp.json()["data"]["days"] if d["steps"]}
            attempts = book.attempts[user]
            by_code = {code_of(a.k): a for a in attempts}  # the latest with each code
            out.acknowledged += sum(a.ok for a in attempts)
            # The journal: which attempts ran.
            ran: set[int] = set()
            for a in attempts:
                steps = held.get(book.journal_day(a.k))
                if steps is None:
                    continue
                code, index = attempt_of(steps)
                if index != JOURNAL_INDEX or code not in by_code:
                    out.unknown.append(user)
                    continue
                ran.add(by_code[code].k)
            for a in attempts:
                if a.ok and not any(k >= a.k and (k - a.k) % JOURNAL_DAYS == 0 for k in ran):
                    out.lost.append(user)
                if not a.ok and a.k in ran:
                    out.unanswered_stored += 1
                    out.ran_unanswered.add((user, a.k))
            # The board's days: one attempt's, the latest that ran.
            codes = set()
            for j, day in enumerate(book.days):
                steps = held.get(day)
                if steps is None:
                    codes.add(0)
                    continue
                code, index = attempt_of(steps)
                if index != j:
                    out.unknown.append(user)
                codes.add(code)
            latest = code_of(max(ran)) if ran else 0
            if codes != {latest}:
                out.torn.append(user)
            out.stored[user] = latest or None

        await asyncio.gather(*(one(u) for u in book.users))
    return out


def expected_score(book: Book, code: int | None) -> int:
    """A participant's score on a steps board whose days hold the attempt `code`."""
    if not code:
        return 0
    return sum(code * 10 + j for j in range(len(book.days)))


async def board(base: str, cid: str, token: str, limit: int = 1000) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        resp = await http.get(
            f"{API}/leaderboard/{cid}?limit={limit}", headers={"Authorization": f"Bearer {token}"}
        )
        resp.raise_for_status()
        data: dict[str, Any] = resp.json()["data"]
        return data


async def board_mismatches(
    base: str, book: Book, check: SyncCheck, token: str
) -> dict[str, tuple[int, int]]:
    """Participants whose board score is not what their days hold: {user: (board, days)}."""
    data = await board(base, book.cid, token)
    scores = {e["user_id"]: e["score"] for e in data["entries"]}
    wrong = {}
    for user in book.users:
        want = expected_score(book, check.stored.get(user))
        if scores.get(user, 0) != want:
            wrong[user] = (scores.get(user, 0), want)
    return wrong


async def settle_board(
    base: str, book: Book, check: SyncCheck, token: str, within: float
) -> dict[str, tuple[int, int]]:
    """`board_mismatches` until there are none or `within` seconds have passed (the
    sweep pushes what an interrupted sync left owed)."""
    deadline = time.monotonic() + within
    while True:
        wrong = await board_mismatches(base, book, check, token)
        if not wrong or time.monotonic() > deadline:
            return wrong
        await asyncio.sleep(0.25)


def outage(attempts: Sequence[Attempt], after: float) -> dict[str, Any]:
    """The window of non-2xx answers among attempts started at or after `after`, and
    the first 2xx after the last of them (monotonic times, relative to `after`)."""
    mine = sorted((a for a in attempts if a.started >= after), key=lambda a: a.started)
    bad = [a for a in mine if not a.ok]
    if not bad:
        return {"failed": 0, "first_failed_s": None, "last_failed_s": None, "recovered_s": None}
    last = max(a.started + a.took for a in bad)
    recovered = next((a.started + a.took for a in mine if a.ok and a.started >= last), None)
    return {
        "failed": len(bad),
        "first_failed_s": round(bad[0].started - after, 3),
        "last_failed_s": round(last - after, 3),
        "recovered_s": None if recovered is None else round(recovered - after, 3),
    }
