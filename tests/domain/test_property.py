"""Property: after any sequence of joins, syncs, trusted writes and leaves (through the
HTTP API), the leaderboard and every participant's stats equal a from-scratch model.

The model: per (user, day, source) the latest values; per day the max across sources;
a participant's score is the sum over the window plus the offset of a trusted write
(target minus the activity total at the time); ranks 1, 2, 2, 4; within a tie whoever
reached their current score first, then the user id.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from healthcomp.core.clock import FixedClock, to_ms
from tests.conftest import SERVICE_AUTH, auth
from tests.domain.helpers import API, create_comp

START, END = "2026-11-04", "2026-11-10"
DAYS = [f"2026-11-{d:02d}" for d in range(1, 12)]  # 11-01 .. 11-11: in and out
SOURCES = ["phone", "watch", "google_fit"]
N_USERS = 4
_examples = itertools.count()

user_idx = st.integers(0, N_USERS - 1)
record = st.tuples(
    st.sampled_from(DAYS),
    st.sampled_from(SOURCES),
    st.sampled_from([0, 100, 500, 1000, 2500, 7000]),  # few values: ties, corrections
    st.sampled_from([0, 80, 400, 1200]),
)
operation = st.one_of(
    st.tuples(st.just("join"), user_idx),
    st.tuples(st.just("sync"), user_idx, st.lists(record, min_size=1, max_size=3)),
    st.tuples(st.just("sync"), user_idx, st.lists(record, min_size=1, max_size=3)),
    st.tuples(st.just("sync"), user_idx, st.lists(record, min_size=1, max_size=3)),
    st.tuples(st.just("write"), user_idx, st.sampled_from([0, 500, 3000, 9000])),
    st.tuples(st.just("leave"), user_idx),
)


@dataclass
class Model:
    epoch_ms: int
    records: dict[tuple[str, str, str], tuple[int, int]] = field(default_factory=dict)
    joined: set[str] = field(default_factory=set)
    known: set[str] = field(default_factory=set)  # users the service has heard of
    offset: dict[str, int] = field(default_factory=dict)  # trusted-write offset (steps)
    score: dict[str, int] = field(default_factory=dict)
    reached: dict[str, int] = field(default_factory=dict)  # the operation that reached it

    def day_values(self, user: str) -> dict[str, tuple[int, int]]:
        out: dict[str, tuple[int, int]] = {}
        for (u, day, _), (steps, dist) in self.records.items():
            if u == user:
                s, d = out.get(day, (0, 0))
                out[day] = (max(s, steps), max(d, dist))
        return out

    def activity(self, user: str) -> tuple[int, int]:
        days = [v for d, v in self.day_values(user).items() if START <= d <= END]
        return sum(s for s, _ in days), sum(d for _, d in days)

    def computed_score(self, user: str) -> int:
        return max(0, self.activity(user)[0] + self.offset.get(user, 0))

    def rescore(self, user: str, now_s: int) -> None:
        new = self.computed_score(user)
        if new != self.score[user]:
            self.score[user] = new
            self.reached[user] = now_s

    def rank_of(self, score: int) -> int:
        return 1 + sum(1 for u in self.joined if self.score[u] > score)

    def board(self) -> list[tuple[str, int, int, int, int]]:
        order = sorted(self.joined, key=lambda u: (-self.score[u], self.reached[u], u))
        out = []
        for u in order:
            steps, dist = self.activity(u)
            shown_steps = max(0, steps + self.offset.get(u, 0))
            out.append((u, self.rank_of(self.score[u]), self.score[u], shown_steps, dist))
        return out


async def _apply(
    client: httpx.AsyncClient, model: Model, cid: str, now_s: int, op: tuple[Any, ...]
) -> None:
    kind, i = op[0], op[1]
    user = f"{cid}u{i}"
    if kind == "join":
        resp = await client.post(f"{API}/competitions/{cid}/join", headers=auth(user))
        model.known.add(user)
        if user in model.joined:
            assert resp.status_code == 409, resp.text
            assert resp.json()["error"] == "already_joined"
            return
        assert resp.status_code == 200, resp.text
        model.joined.add(user)
        # Adjustments belong to the participation: a rejoin keeps them.
        model.score[user] = max(0, model.offset.get(user, 0))
        model.reached[user] = now_s
        model.rescore(user, now_s)  # backfill of days synced before joining
        assert resp.json()["data"]["participant_count"] == len(model.joined)
    elif kind == "leave":
        resp = await client.post(f"{API}/competitions/{cid}/leave", headers=auth(user))
        if user not in model.joined:
            assert resp.status_code == 409, resp.text
            return
        assert resp.status_code == 200, resp.text
        model.joined.discard(user)
        model.score.pop(user)
        model.reached.pop(user)
    elif kind == "write":
        target = op[2]
        body = {"user_id": user, "competition_id": cid, "steps": target}
        resp = await client.post(f"{API}/leaderboard/update", json=body, headers=SERVICE_AUTH)
        if user not in model.joined:
            assert resp.status_code == 404, resp.text
            return
        assert resp.status_code == 200, resp.text
        prev_rank = model.rank_of(model.score[user])
        model.offset[user] = target - model.activity(user)[0]
        model.rescore(user, now_s)
        data = resp.json()["data"]
        assert data["entry"]["score"] == model.score[user] == target
        assert data["entry"]["rank"] == model.rank_of(target)
        assert data["previous_rank"] == prev_rank
    else:
        records = op[2]
        body = {
            "records": [
                {"date": d, "source": s, "steps": steps, "distance": dist}
                for d, s, steps, dist in records
            ]
        }
        resp = await client.post(f"{API}/fitness/sync", json=body, headers=auth(user))
        assert resp.status_code == 200, resp.text
        model.known.add(user)
        rank_before = model.rank_of(model.score[user]) if user in model.joined else None
        for d, s, steps, dist in records:
            model.records[(user, d, s)] = (steps, dist)
        expected: list[dict[str, Any]] = []
        if user in model.joined and any(START <= d <= END for d, *_ in records):
            model.rescore(user, now_s)
            expected = [
                {
                    "competition_id": cid,
                    "score": model.score[user],
                    "rank": model.rank_of(model.score[user]),
                    "previous_rank": rank_before,
                }
            ]
        assert resp.json()["data"]["competitions"] == expected


async def _check(client: httpx.AsyncClient, model: Model, cid: str) -> None:
    resp = await client.get(f"{API}/leaderboard/{cid}?limit=1000", headers=auth("viewer"))
    assert resp.status_code == 200, resp.text
    data = resp.json()["data"]
    got = [
        (e["user_id"], e["rank"], e["score"], e["steps"], e["distance"]) for e in data["entries"]
    ]
    assert got == model.board()
    assert data["total_count"] == len(model.joined)
    for i in range(N_USERS):
        user = f"{cid}u{i}"
        resp = await client.get(f"{API}/fitness/stats/{user}", headers=SERVICE_AUTH)
        if user not in model.known:
            assert resp.status_code == 404, resp.text
            continue
        assert resp.status_code == 200, resp.text
        stats = resp.json()["data"]
        days = model.day_values(user)
        assert stats["totals"]["steps"] == sum(s for s, _ in days.values())
        assert stats["totals"]["distance"] == sum(d for _, d in days.values())
        assert stats["days_recorded"] == len(days)
        comps = [(c["competition_id"], c["score"], c["rank"]) for c in stats["competitions"]]
        if user in model.joined:
            score = model.score[user]
            assert comps == [(cid, score, model.rank_of(score))]
        else:
            assert comps == []


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=st.lists(operation, min_size=1, max_size=30))
async def test_board_and_stats_match_model(
    client: httpx.AsyncClient, clock: FixedClock, ops: list[tuple[Any, ...]]
) -> None:
    cid = f"p{next(_examples)}"
    # One organizer per example: a user organizes at most 20 open competitions.
    await create_comp(
        client, cid, org=f"org-{cid}", start_date=START, end_date=END, visibility="public"
    )
    model = Model(epoch_ms=to_ms(clock.now()))
    # Ties go to whoever reached the score first, by the server's clock, which the engine
    # keeps strictly increasing per competition: the order of the operations.
    for seq, op in enumerate(ops):
        clock.advance(seconds=1)
        await _apply(client, model, cid, seq, op)
    await _check(client, model, cid)
