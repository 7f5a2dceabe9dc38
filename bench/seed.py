"""Seeding through the HTTP API, as clients would: a competition, joins, syncs."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import httpx

from healthcomp.core.auth import SERVICE, USER, mint_token

API = "/api/v1"
# The window: the last 7 days count (the batch-sync row sends those), and it runs on.
DAYS_BEFORE, DAYS_AFTER = 6, 20
SYNCED_DAYS = 4  # each user's seeded history
SEED_STEPS = (1_000, 20_000)  # a seeded day; the sync rows send more, so scores move
_CONCURRENCY = 16


def user_token(secret: str, user_id: str, name: str) -> str:
    return mint_token(secret, user_id=user_id, role=USER, name=name)


def service_token(secret: str) -> str:
    return mint_token(secret, user_id=None, role=SERVICE)


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def check(response: httpx.Response, what: str) -> Any:
    """The response's `data`, or a loud failure naming the request."""
    if not response.is_success:
        raise RuntimeError(
            f"{what}: {response.request.method} {response.request.url.path} answered "
            f"{response.status_code}: {response.text[:500]}"
        )
    return response.json().get("data")


def create_competition(client: httpx.Client, token: str, cid: str, name: str, today: date) -> None:
    """A public steps competition whose window covers the last week and the next ones."""
    body = {
        "id": cid,
        "name": name,
        "metric": "steps",
        "start_date": (today - timedelta(days=DAYS_BEFORE)).isoformat(),
        "end_date": (today + timedelta(days=DAYS_AFTER)).isoformat(),
        "visibility": "public",
    }
    check(client.post(f"{API}/competitions", json=body, headers=auth(token)), f"creating {cid}")


@dataclass(frozen=True)
class Board:
    """The seeded competition and its participants' tokens, in join order."""

    competition_id: str
    users: list[str]
    tokens: dict[str, str]


def seed_board(base: str, secret: str, cid: str, users: int, today: date) -> Board:
    service = service_token(secret)
    with httpx.Client(base_url=base, timeout=30) as client:
        create_competition(client, service, cid, "Benchmark board", today)
    ids = [f"bench-u{i:04d}" for i in range(users)]
    tokens = {uid: user_token(secret, uid, f"Bench user {i}") for i, uid in enumerate(ids)}
    asyncio.run(_join_and_sync(base, cid, tokens, today))
    return Board(cid, ids, tokens)


async def _join_and_sync(base: str, cid: str, tokens: dict[str, str], today: date) -> None:
    rng = random.Random(7)
    days = [(today - timedelta(days=d)).isoformat() for d in range(SYNCED_DAYS)]
    histories = {
        uid: [{"date": d, "steps": rng.randint(*SEED_STEPS), "source": "phone"} for d in days]
        for uid in tokens
    }
    gate = asyncio.Semaphore(_CONCURRENCY)
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:

        async def one(uid: str) -> None:
            async with gate:
                headers = auth(tokens[uid])
                joined = await client.post(f"{API}/competitions/{cid}/join", headers=headers)
                check(joined, f"{uid} joining")
                body = {"records": histories[uid]}
                synced = await client.post(f"{API}/fitness/sync", json=body, headers=headers)
                check(synced, f"{uid} syncing")

        await asyncio.gather(*(one(uid) for uid in tokens))
