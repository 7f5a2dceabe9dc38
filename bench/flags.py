"""The anomaly flags' false-positive rate on a synthetic honest field, and planted cheats.

Starts an embedded Redis in a temporary directory and, through the service's own
functions (as `healthcomp.demo` does), creates one steps competition, joins N users and
syncs their days, one batch per user, in a fixed order:

* each honest user walks a base level drawn from a lognormal around 8,000 steps a day
  (sigma 0.45); each day is lognormal around it (sigma 0.3, about 30% variation), with
  4% of days at zero (the phone left at home); distance is steps x the user's stride
  (0.65-0.85 m, +-3% a day), active minutes about steps / 100 (sigma 0.2), calories
  about steps / 25; HISTORY_DAYS days before the window are synced too, so the checks
  against a user's own history work from the first day;
* a share of the users (`--late-share`) sync their last day only the next morning,
  after the competition's end, in the grace period, as a phone that syncs overnight
  would (the rest sync it on the last evening);
* then a handful of planted users, who walk like an 8,000-step user, send one planted
  day each: 95,000 steps, 40 km from 2,000 steps, or 35,000 steps in 5 active minutes.

Prints the flags on honest user-days per kind, the false-positive rates (flagged honest
user-days over honest user-days, flagged honest users over honest users) and whether
every planted anomaly was caught with the kind it should raise (exit status 1 if not).
Deterministic for a seed: the field is generated from it and synced in order, on a
clock that stands still.

    python -m bench.flags [--participants 2000] [--days 30] [--seed 1] [--late-share 0.1]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from healthcomp.activity import service as activity
from healthcomp.activity.schemas import Batch, Record
from healthcomp.competitions import service as competitions
from healthcomp.competitions.schemas import CompetitionCreate
from healthcomp.core.auth import SERVICE, Principal
from healthcomp.core.clock import FixedClock
from healthcomp.core.context import AppContext
from healthcomp.core.embedded import EmbeddedRedis
from healthcomp.core.settings import Settings
from healthcomp.core.standalone import standalone
from healthcomp.engine import flags, reads

CID = "bench-flags"
FIRST_DAY = date(2026, 3, 2)  # the window's first day (a fixed date: reproducible)
HISTORY_DAYS = 14  # synced before the window: the users' own history
BASE_STEPS, BASE_SIGMA = 8_000, 0.45  # a user's level: lognormal around 8,000
DAY_SIGMA = 0.3  # a day around the user's level
ZERO_DAY = 0.04
STRIDE = (0.65, 0.85)  # metres
PLANTS_PER_KIND = 3
JOIN_CONCURRENCY = 32
SERVICE_PRINCIPAL = Principal(role=SERVICE, user_id=None)

# A day's values: steps, distance (m), calories (kcal), active minutes.
Day = tuple[int, int, int, int]


@dataclass(frozen=True)
class Plant:
    """A planted anomaly: the day a planted user sends, and the flag it must raise."""

    label: str
    expected: str
    values: Day


PLANTS = (
    Plant("95,000 steps for an 8k walker", flags.OWN_HISTORY, (95_000, 71_250, 3_800, 900)),
    Plant("40 km from 2,000 steps", flags.STRIDE, (2_000, 40_000, 900, 100)),
    Plant("35,000 steps, 5 active minutes", flags.NO_ACTIVE_MINUTES, (35_000, 26_250, 1_400, 5)),
)


@dataclass
class User:
    user_id: str
    days: dict[str, Day]  # history and window, by day
    late: bool  # syncs the last day in the grace period


@dataclass(frozen=True)
class Planted:
    user_id: str
    day: str
    plant: Plant


def _walker(rng: random.Random, user_id: str, days: list[str], base: float, late: bool) -> User:
    stride = rng.uniform(*STRIDE)
    kcal = rng.uniform(0.035, 0.05)
    out: dict[str, Day] = {}
    for day in days:
        if rng.random() < ZERO_DAY:
            out[day] = (0, 0, 0, 0)
            continue
        steps = min(100_000, round(base * math.exp(rng.gauss(0.0, DAY_SIGMA))))
        distance = min(250_000, round(steps * stride * rng.uniform(0.97, 1.03)))
        minutes = min(1_440, round(steps / 100 * math.exp(rng.gauss(0.0, 0.2))))
        out[day] = (steps, distance, round(steps * kcal), minutes)
    return User(user_id, out, late)


def generate(
    rng: random.Random, participants: int, days: int, late_share: float
) -> tuple[list[User], list[Planted]]:
    """The honest field, then the planted users (their planted days kept aside)."""
    first = FIRST_DAY - timedelta(days=HISTORY_DAYS)
    all_days = [(first + timedelta(days=i)).isoformat() for i in range(HISTORY_DAYS + days)]
    users = [
        _walker(
            rng,
            f"h{i:05d}",
            all_days,
            BASE_STEPS * math.exp(rng.gauss(0.0, BASE_SIGMA)),
            rng.random() < late_share,
        )
        for i in range(participants)
    ]
    window = all_days[HISTORY_DAYS:]
    planted: list[Planted] = []
    for k, plant in enumerate(PLANTS):
        for j in range(PLANTS_PER_KIND):
            user = _walker(rng, f"plant-{k}{j}", all_days, BASE_STEPS, late=False)
            users.append(user)
            planted.append(Planted(user.user_id, rng.choice(window[:-1]), plant))
    return users, planted


def _records(days: dict[str, Day]) -> list[Record]:
    return [
        Record(
            date=date.fromisoformat(day),
            steps=v[0],
            distance=v[1],
            calories=v[2],
            active_minutes=v[3],
            source="phone",
        )
        for day, v in sorted(days.items())
    ]


async def _sync(ctx: AppContext, user_id: str, days: dict[str, Day]) -> None:
    records = _records(days)
    for i in range(0, len(records), 400):
        batch = Batch(user_id=user_id, records=records[i : i + 400])
        await activity.sync(ctx, SERVICE_PRINCIPAL, batch)


@dataclass(frozen=True)
class Outcome:
    honest_users: int
    honest_days: int
    active_days: int
    by_kind: Counter[str]  # flagged honest user-days per kind
    users_by_kind: Counter[str]  # honest users with a flag of that kind
    flagged_days: int
    flagged_users: int
    caught: list[tuple[Planted, set[str]]]
    seconds: float


async def run(
    ctx: AppContext, clock: FixedClock, participants: int, days: int, seed: int, late_share: float
) -> Outcome:
    started = time.perf_counter()
    rng = random.Random(seed)
    users, planted = generate(rng, participants, days, late_share)
    last = FIRST_DAY + timedelta(days=days - 1)
    clock.at = datetime.combine(FIRST_DAY, datetime.min.time(), UTC)
    body = CompetitionCreate(
        id=CID,
        name="Fair-play benchmark",
        metric="steps",
        start_date=FIRST_DAY,
        end_date=last,
        visibility="public",
    )
    comp = await competitions.create(ctx, SERVICE_PRINCIPAL, body)
    gate = asyncio.Semaphore(JOIN_CONCURRENCY)

    async def join(user_id: str) -> None:
        async with gate:
            await competitions.join(ctx, SERVICE_PRINCIPAL, comp, user_id)

    await asyncio.gather(*(join(u.user_id) for u in users))

    # The last evening: everything but the late users' last day (UTC-4 to UTC+8 all
    # see the last day begun by then, and it is over nowhere yet).
    clock.at = datetime.combine(last, datetime.min.time(), UTC) + timedelta(hours=20)
    last_day = last.isoformat()
    for user in users:  # in order: the field a day is compared with is reproducible
        days_now = {d: v for d, v in user.days.items() if not (user.late and d == last_day)}
        await _sync(ctx, user.user_id, days_now)
    for plant in planted:
        await _sync(ctx, plant.user_id, {plant.day: plant.plant.values})
    # The next morning, after the end, in the grace period: the late users' last day.
    clock.at += timedelta(hours=22)
    for user in users:
        if user.late:
            await _sync(ctx, user.user_id, {last_day: user.days[last_day]})

    honest = {u.user_id for u in users if not u.user_id.startswith("plant-")}
    window = {(FIRST_DAY + timedelta(days=i)).isoformat() for i in range(days)}
    found = {
        (f["user_id"], f["day"]): set(f.get("kinds") or {}) for f in await reads.flags(ctx, CID)
    }
    honest_flags = {key: kinds for key, kinds in found.items() if key[0] in honest}
    by_kind: Counter[str] = Counter(k for kinds in honest_flags.values() for k in kinds)
    users_by_kind: Counter[str] = Counter(
        k for k, _ in {(k, key[0]) for key, kinds in honest_flags.items() for k in kinds}
    )
    active = sum(
        1 for u in users if u.user_id in honest for d, v in u.days.items() if d in window and v[0]
    )
    return Outcome(
        honest_users=len(honest),
        honest_days=len(honest) * days,
        active_days=active,
        by_kind=by_kind,
        users_by_kind=users_by_kind,
        flagged_days=len(honest_flags),
        flagged_users=len({user for user, _ in honest_flags}),
        caught=[(p, found.get((p.user_id, p.day), set())) for p in planted],
        seconds=time.perf_counter() - started,
    )


def _rate(part: int, whole: int) -> str:
    return f"{100 * part / whole:.3f}%" if whole else "-"


def report(outcome: Outcome, args: argparse.Namespace) -> bool:
    """Prints the table; True when every planted anomaly was caught."""
    print(
        f"bench.flags: {args.participants} honest participants x {args.days} days "
        f"(+{HISTORY_DAYS} days of history), seed {args.seed}, "
        f"late share {args.late_share:.0%}; {outcome.seconds:.1f} s"
    )
    print(
        f"honest user-days: {outcome.honest_days:,} ({outcome.active_days:,} with steps); "
        f"planted anomalies: {len(outcome.caught)}\n"
    )
    days, users = outcome.honest_days, outcome.honest_users
    print(f"{'flags on honest users':<24} {'user-days':>9} {'rate':>9} {'users':>7} {'rate':>9}")
    for kind in flags.KINDS:
        n, u = outcome.by_kind.get(kind, 0), outcome.users_by_kind.get(kind, 0)
        print(f"{kind:<24} {n:>9} {_rate(n, days):>9} {u:>7} {_rate(u, users):>9}")
    n, u = outcome.flagged_days, outcome.flagged_users
    print(f"{'any (false positives)':<24} {n:>9} {_rate(n, days):>9} {u:>7} {_rate(u, users):>9}\n")
    print(f"{'planted anomaly':<32} {'user':<9} {'day':<10}  {'caught':<6} kinds raised")
    missed = 0
    for planted, kinds in outcome.caught:
        hit = planted.plant.expected in kinds
        missed += not hit
        print(
            f"{planted.plant.label:<32} {planted.user_id:<9} {planted.day:<10}  "
            f"{'yes' if hit else 'NO':<6} {', '.join(k for k in flags.KINDS if k in kinds) or '-'}"
        )
    total = len(outcome.caught)
    print(f"\n{total - missed} of {total} planted anomalies caught with the expected kind")
    return missed == 0


async def _main(args: argparse.Namespace, data_dir: Path) -> bool:
    server = EmbeddedRedis(data_dir / "redis")
    url = server.start()
    try:
        settings = Settings.model_construct(
            **{
                **Settings.model_construct().model_dump(),
                "redis_url": url,
                "data_dir": data_dir,
                "key_prefix": "bench" + uuid.uuid4().hex[:8],
                "supabase_jwt_secret": "bench-" + "x" * 40,  # no token is minted
            }
        )
        async with standalone(settings) as ctx:
            clock = FixedClock(datetime.combine(FIRST_DAY, datetime.min.time(), UTC))
            ctx.clock = clock
            outcome = await run(
                ctx, clock, args.participants, args.days, args.seed, args.late_share
            )
        return report(outcome, args)
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--participants", type=int, default=2000, help="honest participants")
    parser.add_argument("--days", type=int, default=30, help="the competition's days")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--late-share",
        type=float,
        default=0.1,
        help="share of users whose last day arrives after the end, in the grace period",
    )
    args = parser.parse_args()
    if args.participants < 1 or not 1 <= args.days <= 300 or not 0 <= args.late_share <= 1:
        parser.error("--participants >= 1, 1 <= --days <= 300, 0 <= --late-share <= 1")
    with tempfile.TemporaryDirectory(prefix="hc-bench-flags-") as tmp:
        ok = asyncio.run(_main(args, Path(tmp)))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
