"""Competition analytics (SPEC §6.6): the field per day, the score distribution, the
movers of the last 24 hours and projected finishes, from what the board engine keeps up
to date as days arrive (`engine.scripts.ANALYTICS` reads it at once; nothing here scans
a participant's days).

The computed view of a board is cached per worker against the board's version, the
count of its changes that make no event, and the hour (movers look back 24 hours,
projections count days), so a read reflects every change acknowledged before it, and a
busy dashboard costs one small read.
"""

from __future__ import annotations

import asyncio
import bisect
from collections import OrderedDict
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from healthcomp.analytics.projections import (
    SIMULATIONS,
    Projection,
    Runner,
    project,
    ranks,
    seed_of,
)
from healthcomp.competitions.model import Stored
from healthcomp.core.auth import Principal
from healthcomp.core.clock import from_ms, to_ms
from healthcomp.core.context import AppContext
from healthcomp.core.errors import NotFound
from healthcomp.engine import reads
from healthcomp.engine.flags import CAPS
from healthcomp.engine.model import AnalyticsInputs
from healthcomp.engine.rules import METRICS
from healthcomp.fairplay import service as fairplay

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
MAX_DAYS = 400  # days of the field reported (the latest ones)
HISTOGRAM_BINS = 10
PERCENTILES = (10, 25, 50, 75, 90, 99)
CACHED = 64  # computed views kept per worker


@dataclass(frozen=True)
class Computed:
    """Everything a view of the analytics is cut from, for one board version and hour."""

    version: int
    quiet: int
    hour: int
    days: list[dict[str, Any]]
    distribution: dict[str, Any]
    movers: list[dict[str, Any]]  # biggest gain first
    window: dict[str, Any]
    projections: dict[str, Projection] | None  # None before the first day
    board: list[tuple[str, int]]  # (user, score) in rank order
    scores: dict[str, int]
    ranks: dict[str, int]
    names: dict[str, str]
    disqualified: list[tuple[str, int]]  # (user, score)


class Analytics:
    """The worker's computed views, newest first (one per app context)."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.views: OrderedDict[str, Computed] = OrderedDict()

    async def computed(self, stored: Stored) -> Computed:
        now_ms = to_ms(self.ctx.clock.now())
        hour = now_ms // HOUR_MS
        cached = self.views.get(stored.id)
        if cached is not None and cached.hour == hour:
            changes = await reads.changes(self.ctx, stored.id)
            if changes == (cached.version, cached.quiet):
                self.views.move_to_end(stored.id)
                return cached
        first, last = _days_to_read(stored, now_ms)
        inputs = await reads.analytics_inputs(self.ctx, stored.id, first, last)
        if inputs is None:
            raise NotFound(f"No competition '{stored.id}'.", error="competition_not_found")
        result = await asyncio.to_thread(compute, stored, inputs, now_ms)
        self.views[stored.id] = result
        self.views.move_to_end(stored.id)
        while len(self.views) > CACHED:
            self.views.popitem(last=False)
        return result


def analytics_of(ctx: AppContext) -> Analytics:
    return ctx.service("analytics", Analytics)


def _today(now_ms: int) -> date:
    return date.fromisoformat(from_ms(now_ms)[:10])


def _days_to_read(stored: Stored, now_ms: int) -> tuple[str, str]:
    """The window's days up to today (UTC), at most MAX_DAYS of them; an empty range
    (first after last) before the start."""
    last = min(stored.end, _today(now_ms))
    first = max(stored.start, last - timedelta(days=MAX_DAYS - 1))
    return first.isoformat(), last.isoformat()


def _quantile(values: list[int], q: float) -> float:
    """Linear between the two nearest of sorted `values` (numpy's default)."""
    pos = q * (len(values) - 1)
    i = int(pos)
    if i + 1 >= len(values):
        return float(values[-1])
    return values[i] + (values[i + 1] - values[i]) * (pos - i)


def distribution(scores: list[int]) -> dict[str, Any]:
    """Percentiles and an equal-width histogram from 0 to the top score."""
    ordered = sorted(scores)
    if not ordered:
        return {
            "count": 0,
            "min": None,
            "max": None,
            "mean": None,
            "percentiles": {},
            "histogram": [],
        }
    top = ordered[-1]
    width = max(1, -(-top // HISTOGRAM_BINS))  # ceil, at least 1
    bins = []
    for b in range(HISTOGRAM_BINS):
        lo, hi = b * width, (b + 1) * width
        last = b == HISTOGRAM_BINS - 1 or hi > top
        count = (len(ordered) if last else bisect.bisect_left(ordered, hi)) - bisect.bisect_left(
            ordered, lo
        )
        bins.append({"from": lo, "to": hi, "count": count})
        if last:
            break
    return {
        "count": len(ordered),
        "min": ordered[0],
        "max": top,
        "mean": round(sum(ordered) / len(ordered), 2),
        "percentiles": {f"p{p}": round(_quantile(ordered, p / 100), 2) for p in PERCENTILES},
        "histogram": bins,
    }


def _baseline(checkpoints: str | None, hour: int, score: int) -> int:
    """The score at the start of the hour 24 hours ago, from a participant's movers
    checkpoints (the first checkpoint at or after it; none: unchanged since)."""
    if checkpoints:
        for item in checkpoints.split(","):
            h, s = item.split(":")
            if int(h) >= hour - 24:
                return int(s)
    return score


def _ranks_of(scores: dict[str, int]) -> dict[str, int]:
    """Standard competition ranks of these scores, by user."""
    return dict(zip(scores, ranks(list(scores.values())), strict=True))


def movers(inputs: AnalyticsInputs, now_ranks: dict[str, int], now_ms: int) -> list[dict[str, Any]]:
    """Who gained most in the last 24 hours (from the start of the hour 24 hours ago),
    with their rank then and now. Whoever joined since is not a mover."""
    hour = now_ms // HOUR_MS
    before: dict[str, int] = {}
    now_scores: dict[str, int] = {}
    for user, score in inputs.board:
        if int(inputs.entries.get(user, {}).get("j") or 0) > now_ms - DAY_MS:
            continue
        now_scores[user] = score
        before[user] = _baseline(inputs.movers.get(user), hour, score)
    then = _ranks_of(before)
    out: list[dict[str, Any]] = [
        {
            "user_id": user,
            "user_name": inputs.names.get(user, user),
            "score": score,
            "gain": score - before[user],
            "rank": now_ranks[user],
            "previous_rank": then[user],
        }
        for user, score in now_scores.items()
        if score != before[user]
    ]
    out.sort(key=lambda m: (-m["gain"], m["rank"], m["user_id"]))
    return out


def days_view(inputs: AnalyticsInputs) -> list[dict[str, Any]]:
    """Per day: the field (everyone on the board: a late joiner's earlier days count
    too, through the back-fill), those with a value, their total and median, and the
    sign-ups and leaves of that UTC day (those before the first day on the first)."""
    first = inputs.days[0].day if inputs.days else ""
    joined: dict[str, int] = {}
    left: dict[str, int] = {}
    for counts, into in ((inputs.joins, joined), (inputs.leaves, left)):
        for utc_day, n in counts.items():
            key = max(utc_day, first)
            into[key] = into.get(key, 0) + n
    field = len(inputs.board)
    out = []
    for day in inputs.days:
        median = day.median
        out.append(
            {
                "date": day.day,
                "participants": field,
                "active_participants": day.active,
                "joined": joined.get(day.day, 0),
                "left": left.get(day.day, 0),
                "total": day.total,
                "median": int(median) if median == int(median) else median,
            }
        )
    return out


def compute(stored: Stored, inputs: AnalyticsInputs, now_ms: int) -> Computed:
    """The analytics of one board version (runs in a worker thread: the projections'
    simulation is numpy work)."""
    metric = METRICS.index(stored.doc["metric"])
    goal = stored.doc["format"] == "goal"
    scores = dict(inputs.board)
    board_ranks = _ranks_of(scores)
    today = _today(now_ms)
    total_days = (stored.end - stored.start).days + 1
    elapsed = min(max((today - stored.start).days + 1, 0), total_days)
    window = {
        "start_date": stored.doc["start_date"],
        "end_date": stored.doc["end_date"],
        "days": total_days,
        "days_elapsed": elapsed,
        "days_remaining": total_days - elapsed,
    }
    projections: dict[str, Projection] | None = None
    if elapsed > 0 and inputs.board:
        runners = []
        for user, score in inputs.board:
            e = inputs.entries.get(user, {})
            counted = float(e.get("g", 0)) if goal else float(e.get("t", [0, 0, 0, 0])[metric])
            squares = counted if goal else float(e.get("q") or 0)
            runners.append(Runner(user, score, counted, squares))
        result = project(
            runners,
            elapsed=elapsed,
            remaining=total_days - elapsed,
            goal=goal,
            daily_cap=CAPS[metric],
            seed=seed_of(stored.id, inputs.version, elapsed),
        )
        projections = {p.user_id: p for p in result}
    disqualified = sorted(
        (user, int(e.get("sc") or 0)) for user, e in inputs.entries.items() if e.get("dq")
    )
    return Computed(
        version=inputs.version,
        quiet=inputs.quiet,
        hour=now_ms // HOUR_MS,
        days=days_view(inputs),
        distribution=distribution([score for _, score in inputs.board]),
        movers=movers(inputs, board_ranks, now_ms),
        window=window,
        projections=projections,
        board=inputs.board,
        scores=scores,
        ranks=board_ranks,
        names=inputs.names,
        disqualified=disqualified,
    )


def _standing(c: Computed, user: str, score: int) -> dict[str, Any]:
    """A participant's place now and where their pace takes them."""
    p = c.projections.get(user) if c.projections else None
    return {
        "user_id": user,
        "user_name": c.names.get(user, user),
        "rank": c.ranks[user],
        "score": score,
        "projected_score": p.expected if p else None,
        "projected_range": [p.low, p.high] if p else None,
        "projected_rank": p.rank if p else None,
        "chance_to_win": p.chance_to_win if p else None,
    }


async def view(
    ctx: AppContext, principal: Principal, stored: Stored, *, limit: int
) -> dict[str, Any]:
    """The analytics as the caller may see them: the summary for a participant, with
    their own projection; everything, flags and disqualifications included, for the
    organizer and the service role."""
    c = await analytics_of(ctx).computed(stored)
    full = principal.is_service or stored.organized_by(principal.user_id)
    data: dict[str, Any] = {
        "competition_id": stored.id,
        "metric": stored.doc["metric"],
        "format": stored.doc["format"],
        "status": stored.status(ctx.clock.now()),
        "view": "full" if full else "summary",
        "event_id": c.version,
        "window": c.window,
        "participants": len(c.board),
        "days": c.days,
        "distribution": c.distribution,
        "movers": c.movers[:limit],
        "leaders": [_standing(c, user, score) for user, score in c.board[:limit]],
        "simulations": SIMULATIONS if c.projections is not None else 0,
        "me": None,
    }
    user = principal.user_id
    score = c.scores.get(user) if user is not None else None
    if user is not None and score is not None:
        data["me"] = _standing(c, user, score)
    if full:
        data["flags"] = await fairplay.summary(ctx, stored.id)
        data["disqualified"] = [
            {"user_id": u, "user_name": c.names.get(u, u), "score": s} for u, s in c.disqualified
        ]
    return data


async def projected(ctx: AppContext, stored: Stored, user_id: str) -> Projection | None:
    """The user's projected finish in the competition (None before its first day, or
    while they are not on the board)."""
    c = await analytics_of(ctx).computed(stored)
    return c.projections.get(user_id) if c.projections else None
