"""The demo competition: about fifty people, three weeks of varied activity.

Seeded through the same service functions the API uses, so the demo exercises the
real paths. Deterministic (a fixed random seed), including two participants whose
scores tie.
"""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta

from healthcomp.activity import service as activity
from healthcomp.activity.schemas import Batch, Record
from healthcomp.competitions import repo as competitions_repo
from healthcomp.competitions import service as competitions
from healthcomp.competitions.schemas import CompetitionCreate
from healthcomp.core.auth import SERVICE, Authenticator, Principal, mint_token
from healthcomp.core.context import AppContext
from healthcomp.core.settings import Settings
from healthcomp.core.standalone import standalone

DEMO_ID = "demo-steps"
DEMO_USER = "demo-alex"
_FIRST = [
    "Alex",
    "Sam",
    "Jordan",
    "Taylor",
    "Morgan",
    "Casey",
    "Riley",
    "Jamie",
    "Avery",
    "Quinn",
    "Rowan",
    "Drew",
    "Sky",
    "Reese",
    "Emery",
    "Parker",
    "Hayden",
    "Kai",
    "Logan",
    "Noa",
    "Mika",
    "Sasha",
    "Robin",
    "Ari",
    "Jules",
]
_LAST = [
    "Rivera",
    "Chen",
    "Okafor",
    "Novak",
    "Silva",
    "Tanaka",
    "Larsen",
    "Haddad",
    "Kowalski",
    "Mensah",
    "Ortiz",
    "Park",
]
SERVICE_PRINCIPAL = Principal(role=SERVICE, user_id=None)


def _people(rng: random.Random, count: int) -> list[tuple[str, str]]:
    people = [(DEMO_USER, "Alex Rivera")]
    names = {"Alex Rivera"}
    while len(people) < count:
        name = f"{rng.choice(_FIRST)} {rng.choice(_LAST)}"
        if name in names:
            continue
        names.add(name)
        people.append((f"demo-{len(people):02d}", name))
    return people


async def seed(ctx: AppContext, *, participants: int = 50) -> bool:
    """Create and fill the demo competition. False when it already exists."""
    if await competitions_repo.load(ctx, DEMO_ID) is not None:
        return False
    rng = random.Random(20261101)
    today = ctx.clock.today()
    start, end = today - timedelta(days=20), today + timedelta(days=9)
    body = CompetitionCreate(
        id=DEMO_ID,
        name="Demo: 30 days of steps",
        description="A month-long step challenge with a live leaderboard.",
        metric="steps",
        start_date=start,
        end_date=end,
        entry_fee_cents=500,
        currency="USD",
        prize_pool_cents=10_000,
        min_participants=3,
        visibility="public",
    )
    # Run by the service role: it started three weeks ago, further back than a user
    # organizer may date a window.
    comp = await competitions.create(ctx, SERVICE_PRINCIPAL, body)
    people = _people(rng, participants)
    for user_id, name in people:
        await ctx.r.hset(ctx.keys.profile(user_id), mapping={"display_name": name})
        await competitions.join(ctx, SERVICE_PRINCIPAL, comp, user_id)
    totals: dict[str, list[list[int]]] = {}
    for user_id, _ in people:
        base = rng.choice([4_000, 6_500, 8_000, 10_000, 12_500, 15_000])
        days: list[list[int]] = []
        for offset in range(21):
            day_steps = 0 if rng.random() < 0.08 else max(0, int(rng.gauss(base, base * 0.3)))
            day_steps = min(day_steps, 60_000)
            days.append([offset, day_steps])
        totals[user_id] = days
    # Two participants tie: the second copies the first one's days.
    tie_a, tie_b = people[7][0], people[8][0]
    totals[tie_b] = [list(d) for d in totals[tie_a]]
    for user_id, days in totals.items():
        records = []
        for offset, steps in days:
            records.append(
                Record(
                    date=start + timedelta(days=offset),
                    steps=steps,
                    distance=round(steps * rng.uniform(0.68, 0.82)),
                    calories=round(steps * rng.uniform(0.035, 0.05)),
                    active_minutes=min(1440, steps // 110),
                    source=rng.choice(["apple_health", "google_fit", "fitbit", "garmin"]),
                )
            )
        await activity.sync(ctx, SERVICE_PRINCIPAL, Batch(user_id=user_id, records=records))
    return True


async def _seed_standalone(settings: Settings) -> bool:
    async with standalone(settings) as ctx:
        return await seed(ctx)


def seed_demo_sync(settings: Settings, *, print_token: bool = False) -> None:
    """Seed (first time only) and print a token and a curl line."""
    created = asyncio.run(_seed_standalone(settings))
    if not print_token:
        return
    secret = settings.supabase_jwt_secret or Authenticator(settings).secret
    state = "seeded" if created else "already there"
    if secret is None:
        print(f"demo competition '{DEMO_ID}' {state}; mint a token with your Supabase project")
        return
    token = mint_token(
        secret, user_id=DEMO_USER, name="Alex Rivera", issuer=settings.expected_issuer
    )
    base = f"http://{settings.host}:{settings.port}"
    print(
        f"\nDemo competition '{DEMO_ID}' {state}. A token for participant {DEMO_USER}:\n\n"
        f"  export TOKEN={token}\n\n"
        "Try:\n\n"
        f'  curl -s -H "Authorization: Bearer $TOKEN" "{base}/api/v1/leaderboard/{DEMO_ID}'
        '?around=me&limit=5"\n'
        f'  curl -s -H "Authorization: Bearer $TOKEN" {base}/api/v1/users/me\n'
        f"\nLive console, signed in as {DEMO_USER}:\n\n  {base}/console#token={token}"
        f"&competition={DEMO_ID}\n"
        f"\nInteractive docs: {base}/docs\n"
        "Stop the server with Ctrl+C; `make reset` (stopped) deletes its data and the "
        "next `make run` seeds the demo again.\n",
        flush=True,
    )
