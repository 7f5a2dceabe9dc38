"""Stats (SPEC §6.4), computed from the user's effective days in plain Python."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from healthcomp.engine.model import METRIC_NAMES

Days = dict[date, tuple[int, int, int, int]]


def parse_days(raw: dict[str, dict[str, Any]]) -> Days:
    out: Days = {}
    for day, value in raw.items():
        s, d, c, a = (int(x) for x in value["v"])
        out[date.fromisoformat(day)] = (s, d, c, a)
    return out


def _totals(days: Days) -> dict[str, int]:
    return {name: sum(v[i] for v in days.values()) for i, name in enumerate(METRIC_NAMES)}


def _window(days: Days, first: date, last: date) -> Days:
    return {d: v for d, v in days.items() if first <= d <= last}


def streaks(days: Days, goal: int, today: date) -> tuple[int, int]:
    """(current, longest) runs of consecutive days with steps >= goal.

    The current streak is still alive today if it ran through yesterday: today may
    not be over yet.
    """
    met = sorted(d for d, v in days.items() if v[0] >= goal)
    longest = run = 0
    prev: date | None = None
    for d in met:
        run = run + 1 if prev is not None and d - prev == timedelta(days=1) else 1
        longest = max(longest, run)
        prev = d
    current = 0
    metset = set(met)
    cursor = today if today in metset else today - timedelta(days=1)
    while cursor in metset:
        current += 1
        cursor -= timedelta(days=1)
    return current, longest


def summary(days: Days, goal: int, today: date) -> dict[str, Any]:
    totals = _totals(days)
    active = [d for d, v in days.items() if any(v)]
    n = len(active)
    best: dict[str, Any] = {}
    for i, name in enumerate(METRIC_NAMES):
        if days:
            # Highest value; on a tie the earliest day.
            day = min(days, key=lambda d: (-days[d][i], d))
            best[name] = {"date": day.isoformat(), "value": days[day][i]} if days[day][i] else None
        else:
            best[name] = None
    current, longest = streaks(days, goal, today)
    return {
        "totals": totals,
        "daily_averages": {k: (round(v / n, 2) if n else 0) for k, v in totals.items()},
        "active_days": n,
        "days_recorded": len(days),
        "best_day": best,
        "step_goal": goal,
        "current_streak": current,
        "longest_streak": longest,
        "last_7_days": _totals(_window(days, today - timedelta(days=6), today)),
        "last_30_days": _totals(_window(days, today - timedelta(days=29), today)),
        "first_day": min(days).isoformat() if days else None,
        "last_day": max(days).isoformat() if days else None,
    }
