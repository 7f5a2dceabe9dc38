"""A competition of a million participants: created through the API, filled through the
engine's own scripts in Redis pipelines (a million HTTP calls would take hours).

Each participant is what a join and one synced day make of a user on the competition's
side: JOIN, then APPLY of today's steps (random, 0..100,000, so many ties), with the
keys `engine.writes` passes them. The user's own keys (records, effective days, windows)
are not written, so the memory per participant printed is the competition's share.

Participants are added in descending score order: each lands below everyone before it
and passes nobody, which makes APPLY about three times cheaper for Redis than when it
has to name the participants passed in its event. The board is the same.
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, cast

import httpx
import redis

from bench.seed import API, auth, check, create_competition, service_token, user_token
from healthcomp.core.keys import Keys
from healthcomp.engine import scripts
from healthcomp.engine.codes import Reply
from healthcomp.engine.model import Push
from healthcomp.engine.writes import apply_args, apply_keys, join_keys

if TYPE_CHECKING:
    from healthcomp.core.context import AppContext

MAX_STEPS = 100_000
SAMPLE = 1_000  # participants whose tokens the load rotates over
_BATCH = 2_000  # participants per pipeline (two scripts each)
# Pipelines in flight: Python builds one while Redis runs the other. Redis is the limit
# (the two scripts cost it about 130 us a participant, more as the board grows).
_CONNECTIONS = 2
_BACKGROUND = ("aof_rewrite_in_progress", "aof_rewrite_scheduled", "rdb_bgsave_in_progress")


@dataclass(frozen=True)
class _KeysOnly:
    """All of an AppContext that `board_keys` reads."""

    keys: Keys


@dataclass(frozen=True)
class Seeded:
    competition_id: str
    participants: int
    seconds: float
    bytes_per_participant: float
    tokens: dict[str, str]  # the sample's


def participant_id(i: int) -> str:
    return f"m{i:07d}"


class _Seeder:
    def __init__(self, url: str, prefix: str, cid: str, day: date, n: int) -> None:
        self.cid = cid
        self.day = day.isoformat()
        self.now_ms = int(time.time() * 1000)
        rng = random.Random(n)
        self.steps = [rng.randint(0, MAX_STEPS) for _ in range(n)]
        self.order = sorted(range(n), key=self.steps.__getitem__, reverse=True)
        self.keys = Keys(prefix)
        self.ctx = cast("AppContext", _KeysOnly(self.keys))
        # Thread-safe: each pipeline takes a connection of its own from the pool.
        self.client = redis.Redis.from_url(url)
        self.join_sha = self.client.script_load(scripts.JOIN.source)
        self.apply_sha = self.client.script_load(scripts.APPLY.source)

    def batch(self, start: int, end: int) -> int:
        """Participants `start..end` in score order."""
        cid, now = self.cid, self.now_ms
        joining = join_keys(self.ctx, cid)
        pipe = self.client.pipeline(transaction=False)
        for i in self.order[start:end]:
            user = participant_id(i)
            pipe.evalsha(self.join_sha, len(joining), *joining, cid, user, now, f"P {i}")
            applying = apply_keys(self.ctx, cid, user)
            day = Push(cid, self.day, 1, 1, (self.steps[i], 0, 0, 0), now)
            args = apply_args(cid, user, now, [day])
            pipe.evalsha(self.apply_sha, len(applying), *applying, *args)
        for reply in pipe.execute(raise_on_error=False):
            if isinstance(reply, Exception) or Reply(int(reply[0])) is not Reply.OK:
                raise RuntimeError(f"seeding {cid}, participants {start}..{end}: {reply!r}")
        return end - start


def ranges(n: int, batch: int = _BATCH) -> Iterator[tuple[int, int]]:
    """`0..n` in slices of `batch` (one pipeline each)."""
    for start in range(0, n, batch):
        yield start, min(start + batch, n)


def progress(done: int, total: int, started: float, unit: str = "participants") -> None:
    elapsed = time.monotonic() - started
    rate = done / elapsed if elapsed else 0.0
    eta = (total - done) / rate if rate else 0.0
    print(
        f"\r  {done / total:6.1%}  {done:,}/{total:,} {unit}, {rate:,.0f}/s, ETA {eta:.0f} s   ",
        end="",
        file=sys.stderr,
        flush=True,
    )


def settle(url: str, timeout: float = 600.0) -> None:
    """Until Redis runs no background save or AOF rewrite (the seeding starts some):
    the measurements must not share the CPU with one."""
    deadline = time.monotonic() + timeout
    with redis.Redis.from_url(url) as client:
        while True:
            state = client.info("persistence")
            busy = [k for k in _BACKGROUND if int(state.get(k, 0))]
            if not busy:
                return
            if time.monotonic() >= deadline:
                raise RuntimeError(f"Redis still busy after {timeout:.0f} s: {busy}")
            time.sleep(0.2)


def used_memory(url: str) -> int:
    with redis.Redis.from_url(url) as client:
        return int(client.info("memory")["used_memory"])


def seed(
    base: str, secret: str, redis_url: str, prefix: str, cid: str, n: int, today: date
) -> Seeded:
    service = service_token(secret)
    with httpx.Client(base_url=base, timeout=30) as client:
        create_competition(client, service, cid, f"{n:,} participants", today)
    seeder = _Seeder(redis_url, prefix, cid, today, n)
    before = used_memory(redis_url)
    started = time.monotonic()
    done = 0
    try:
        with ThreadPoolExecutor(_CONNECTIONS) as pool:
            for count in pool.map(lambda r: seeder.batch(*r), ranges(n)):
                done += count
                progress(done, n, started)
    finally:
        seeder.client.close()
    seconds = time.monotonic() - started
    print(file=sys.stderr)
    settle(redis_url)
    after = used_memory(redis_url)
    sample = random.Random(1).sample(range(n), min(SAMPLE, n))
    tokens = {participant_id(i): user_token(secret, participant_id(i), f"P {i}") for i in sample}
    _verify(base, service, cid, n, seeder, sample[0], tokens)
    return Seeded(cid, n, seconds, (after - before) / n, tokens)


def _verify(
    base: str, service: str, cid: str, n: int, seeder: _Seeder, i: int, tokens: dict[str, str]
) -> None:
    """The service sees every participant, and a participant's own entry as seeded."""
    user = participant_id(i)
    with httpx.Client(base_url=base, timeout=30) as client:
        page = check(
            client.get(f"{API}/leaderboard/{cid}?limit=10", headers=auth(service)), "1M page"
        )
        mine = check(
            client.get(f"{API}/leaderboard/{cid}?around=me&limit=10", headers=auth(tokens[user])),
            "1M around=me",
        )
    if page["total_count"] != n or len(page["entries"]) != min(10, n):
        raise RuntimeError(f"the {cid} board shows {page['total_count']} participants, not {n}")
    me = mine["me"] or {}
    if me.get("user_id") != user or me.get("score") != seeder.steps[i]:
        raise RuntimeError(f"{user}'s entry is {me}, not a score of {seeder.steps[i]}")


def rank_offsets(n: int, count: int = SAMPLE) -> list[int]:
    """Random deep-page offsets, each with a full page of 10 below it."""
    rng = random.Random(2)
    return [rng.randint(0, max(n - 10, 0)) for _ in range(count)]
