"""Analytics of a competition of 10,000 participants over 30 days: created through the
API, filled through the engine's own scripts in Redis pipelines, then read through
`GET /fitness/analytics/{id}` cold (right after a change to the board, so the worker's
cached view is stale and everything is read and computed again) and warm (the cached
view, under load).

The window is 40 days: it started 30 days ago and ends in 9, so the projections have
days behind them and days ahead. Each participant joins on the first day (JOIN, at the
start of the window, so the field counts them from day one), then one APPLY carries
their 30 past days: realistic steps, a typical level per participant (log-normal around
7,000 a day) times a day-to-day spread, about one day in 25 not synced, with distance,
calories and active minutes to match; random with a fixed seed. The keys and arguments
are those `engine.writes` passes the scripts. The APPLY runs now, so every participant
moved in the last 24 hours: the movers are the whole board (the most the computation
does). The user's own keys (records, effective days, windows) are not written, so the
memory printed is the competition's share.

Participants are added in descending score order, as in bench/million.py: each APPLY
passes nobody.
"""

from __future__ import annotations

import math
import random
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

import httpx
import redis

from bench.million import SAMPLE, _KeysOnly, progress, ranges, settle, used_memory
from bench.seed import API, auth, check, service_token, user_token
from healthcomp.core.keys import Keys
from healthcomp.engine import scripts
from healthcomp.engine.codes import Reply
from healthcomp.engine.model import Push
from healthcomp.engine.writes import apply_args, apply_keys, join_keys

if TYPE_CHECKING:
    from healthcomp.core.context import AppContext

DAYS = 30  # seeded per participant: the window's past days
DAYS_AHEAD = 9  # the window runs on after today
COLD = 10  # cold requests measured, each right after a change to the board
LIMIT = 10  # leaders and movers asked for
TYPICAL_STEPS = 7_000  # the median participant's typical day
LEVEL_SIGMA = 0.45  # spread of the participants' typical days (log-normal)
DAY_SIGMA = 0.35  # spread of one participant's days around their typical day
MISSING = 0.04  # share of days not synced
MAX_STEPS = 100_000  # the daily cap
_BATCH = 500  # participants per pipeline (JOIN and a 30-day APPLY each)
_CONNECTIONS = 2


@dataclass(frozen=True)
class Seeded:
    competition_id: str
    participants: int
    days: int  # seeded per participant, at most (some are not synced)
    window_days: int
    participant_days: int  # days seeded in all
    seconds: float
    bytes_added: int  # Redis `used_memory` after the seeding minus before
    tokens: dict[str, str]  # the sample's
    totals: list[int]  # each participant's steps, by index


@dataclass(frozen=True)
class Cold:
    first_ms: float  # the worker's first analytics request (numpy imported then)
    latencies_ms: list[float]  # each right after a change to the board
    flags: int  # the flags the field raised (the full view's count)

    @property
    def p50_ms(self) -> float:
        return statistics.median(self.latencies_ms)

    @property
    def max_ms(self) -> float:
        return max(self.latencies_ms)


def participant_id(i: int) -> str:
    return f"a{i:06d}"


def path(cid: str) -> str:
    return f"{API}/fitness/analytics/{cid}?limit={LIMIT}"


def _day_ms(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)


def _history(rng: random.Random, days: list[str]) -> list[tuple[str, tuple[int, int, int, int]]]:
    """One participant's synced days: (day, (steps, distance m, calories, active minutes))."""
    level = TYPICAL_STEPS * math.exp(rng.gauss(0.0, LEVEL_SIGMA))
    stride = rng.uniform(0.65, 0.85)  # metres per step
    out = []
    for day in days:
        if rng.random() < MISSING:
            continue
        steps = min(MAX_STEPS, int(level * math.exp(rng.gauss(0.0, DAY_SIGMA))))
        values = (steps, int(steps * stride), 1_400 + steps // 25, min(1_440, steps // 110))
        out.append((day, values))
    return out


class _Seeder:
    def __init__(self, url: str, prefix: str, cid: str, start: date, n: int) -> None:
        self.cid = cid
        self.now_ms = int(time.time() * 1000)
        self.joined_ms = _day_ms(start)  # everyone joins on the first day
        days = [(start + timedelta(days=d)).isoformat() for d in range(DAYS)]
        rng = random.Random(n)
        self.histories = [_history(rng, days) for _ in range(n)]
        self.totals = [sum(v[0] for _, v in h) for h in self.histories]
        self.order = sorted(range(n), key=self.totals.__getitem__, reverse=True)
        self.ctx = cast("AppContext", _KeysOnly(Keys(prefix)))
        # Thread-safe: each pipeline takes a connection of its own from the pool.
        self.client = redis.Redis.from_url(url)
        self.join_sha = cast(str, self.client.script_load(scripts.JOIN.source))
        self.apply_sha = cast(str, self.client.script_load(scripts.APPLY.source))

    def batch(self, start: int, end: int) -> int:
        """Participants `start..end` in score order."""
        cid, now = self.cid, self.now_ms
        joining = join_keys(self.ctx, cid)
        pipe = self.client.pipeline(transaction=False)
        for i in self.order[start:end]:
            user = participant_id(i)
            pipe.evalsha(self.join_sha, len(joining), *joining, cid, user, self.joined_ms, f"A {i}")
            applying = apply_keys(self.ctx, cid, user)
            days = [Push(cid, day, 1, 1, values, now) for day, values in self.histories[i]]
            args = apply_args(cid, user, now, days)
            pipe.evalsha(self.apply_sha, len(applying), *applying, *args)
        for reply in pipe.execute(raise_on_error=False):
            if isinstance(reply, Exception) or Reply(int(reply[0])) is not Reply.OK:
                raise RuntimeError(f"seeding {cid}, participants {start}..{end}: {reply!r}")
        return end - start

    def change(self, i: int, day: date, ver: int, steps: int) -> int:
        """One APPLY: participant `i`'s `day` at version `ver`; the board's new version."""
        cid, user, now = self.cid, participant_id(i), int(time.time() * 1000)
        values = (steps, steps * 3 // 4, 1_400 + steps // 25, min(1_440, steps // 110))
        applying = apply_keys(self.ctx, cid, user)
        args = apply_args(cid, user, now, [Push(cid, day.isoformat(), 1, ver, values, now)])
        reply = cast(
            "list[Any]", self.client.evalsha(self.apply_sha, len(applying), *applying, *args)
        )
        if Reply(int(reply[0])) is not Reply.OK or int(reply[5]) != 1:
            raise RuntimeError(f"changing {user}'s {day} in {cid}: {reply!r}")
        return int(reply[4])


def create_competition(client: httpx.Client, token: str, cid: str, n: int, today: date) -> date:
    """A public steps competition that started DAYS days ago and ends DAYS_AHEAD days
    from today (only the service role may backdate a start this far); its start."""
    start = today - timedelta(days=DAYS)
    body = {
        "id": cid,
        "name": f"Analytics: {n:,} participants",
        "metric": "steps",
        "start_date": start.isoformat(),
        "end_date": (today + timedelta(days=DAYS_AHEAD)).isoformat(),
        "visibility": "public",
    }
    check(client.post(f"{API}/competitions", json=body, headers=auth(token)), f"creating {cid}")
    return start


class Board:
    """The seeded competition, and what its measurements need."""

    def __init__(
        self, base: str, secret: str, redis_url: str, prefix: str, cid: str, today: date
    ) -> None:
        self.base, self.secret, self.redis_url = base, secret, redis_url
        self.prefix, self.cid, self.today = prefix, cid, today
        self.service = service_token(secret)
        self.seeder: _Seeder | None = None

    def seed(self, n: int) -> Seeded:
        with httpx.Client(base_url=self.base, timeout=30) as client:
            start = create_competition(client, self.service, self.cid, n, self.today)
        seeder = self.seeder = _Seeder(self.redis_url, self.prefix, self.cid, start, n)
        before = used_memory(self.redis_url)
        started = time.monotonic()
        done = 0
        with ThreadPoolExecutor(_CONNECTIONS) as pool:
            for count in pool.map(lambda r: seeder.batch(*r), ranges(n, _BATCH)):
                done += count
                progress(done, n, started, f"participants x {DAYS} days")
        seconds = time.monotonic() - started
        print(file=sys.stderr)
        settle(self.redis_url)
        after = used_memory(self.redis_url)
        sample = random.Random(1).sample(range(n), min(SAMPLE, n))
        tokens = {
            participant_id(i): user_token(self.secret, participant_id(i), f"A {i}") for i in sample
        }
        window = DAYS + 1 + DAYS_AHEAD
        seeded_days = sum(len(h) for h in seeder.histories)
        return Seeded(
            self.cid, n, DAYS, window, seeded_days, seconds, after - before, tokens, seeder.totals
        )

    def cold(self, seeded: Seeded, repeat: int = COLD) -> Cold:
        """The worker's first request, then `repeat` requests each right after one APPLY
        (a participant's today, which none of them has yet): the board version moves,
        the cached view is stale, so each reads and computes everything again. The
        answer must reflect that change (`event_id`)."""
        assert self.seeder is not None, "seed first"
        headers = auth(self.service)
        url = path(self.cid)
        rng = random.Random(3)
        changed = rng.sample(range(seeded.participants), min(repeat, seeded.participants))
        with httpx.Client(base_url=self.base, timeout=60) as client:
            started = time.perf_counter()
            data = check(client.get(url, headers=headers), "analytics (first)")
            first_ms = (time.perf_counter() - started) * 1000
            _verify(data, seeded, self.seeder)
            latencies = []
            for k, i in enumerate(changed):
                version = self.seeder.change(i, self.today, 1, 4_000 + 100 * k)
                started = time.perf_counter()
                data = check(client.get(url, headers=headers), "analytics (cold)")
                latencies.append((time.perf_counter() - started) * 1000)
                if data["event_id"] != version:
                    raise RuntimeError(
                        f"analytics answered event_id {data['event_id']} right after the "
                        f"change to version {version}: not a fresh view"
                    )
        return Cold(first_ms, latencies, int(data["flags"]["total"]))

    def close(self) -> None:
        if self.seeder is not None:
            self.seeder.client.close()


def _verify(data: dict[str, Any], seeded: Seeded, seeder: _Seeder) -> None:
    """The view counts every participant, every day of the window so far, and the
    field of the first day as seeded."""
    n = seeded.participants
    if data["participants"] != n or data["distribution"]["count"] != n:
        raise RuntimeError(f"analytics counts {data['participants']} participants, not {n}")
    days = data["days"]
    if len(days) != DAYS + 1 or data["window"]["days_remaining"] != DAYS_AHEAD:
        raise RuntimeError(f"analytics shows {len(days)} days and window {data['window']}")
    first = days[0]
    values = [v[0] for h in seeder.histories for day, v in h if day == first["date"]]
    if first["participants"] != n or first["total"] != sum(values):
        raise RuntimeError(
            f"analytics' first day is {first}, not {n} participants and {sum(values)} steps"
        )
    if first["active_participants"] != sum(1 for v in values if v > 0):
        raise RuntimeError(f"analytics' first day counts {first['active_participants']} active")
    leader = data["leaders"][0]
    if leader["score"] != max(seeded.totals) or leader["projected_score"] is None:
        raise RuntimeError(f"analytics' leader is {leader}, not a score of {max(seeded.totals)}")
