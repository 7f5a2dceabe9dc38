"""The rules of a competition as the engine's scripts read them: its window in time
and the scalar fields kept beside the JSON document in `meta`."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import orjson

from healthcomp.core.clock import to_ms

METRICS = ("steps", "distance", "calories", "active_minutes")
# A calendar day starts first at UTC+14 (Line Islands) and ends last at UTC-12
# (Baker Island). A competition "has started" once its first day began anywhere and
# "has ended" once its last day is over everywhere.
EARLIEST_OFFSET = timedelta(hours=14)
LATEST_OFFSET = timedelta(hours=-12)


def day_start_utc(day: date, offset: timedelta) -> datetime:
    return datetime.combine(day, time(0), UTC) - offset


def starts_at(start: date) -> datetime:
    return day_start_utc(start, EARLIEST_OFFSET)


def ends_at(end: date) -> datetime:
    return day_start_utc(end + timedelta(days=1), LATEST_OFFSET)


def deadline(end: date, grace_hours: int) -> datetime:
    """Syncs for the window's days count until here (end everywhere + grace)."""
    return ends_at(end) + timedelta(hours=grace_hours)


def window_of(doc: dict[str, Any]) -> tuple[str, str, int]:
    """(start day, end day, deadline ms): what a user's record of the competition holds."""
    end = date.fromisoformat(doc["end_date"])
    return doc["start_date"], doc["end_date"], to_ms(deadline(end, int(doc["grace_hours"])))


def meta_fields(doc: dict[str, Any]) -> dict[str, str]:
    """The stored document and the scalar fields the Lua scripts read beside it."""
    start, end, deadline_ms = window_of(doc)
    goal = doc.get("goal") or {}
    maxp = doc.get("max_participants")
    money = int(doc.get("entry_fee_cents") or 0) > 0 or int(doc.get("prize_pool_cents") or 0) > 0
    return {
        "doc": orjson.dumps(doc).decode(),
        "start_date": start,
        "end_date": end,
        "ends_ms": str(to_ms(ends_at(date.fromisoformat(end)))),
        "deadline_ms": str(deadline_ms),
        "metric_idx": str(METRICS.index(doc["metric"])),
        "format": doc["format"],
        "daily_target": str(goal.get("daily_target", 0)),
        "max_participants": str(maxp if maxp is not None else 0),
        "visibility": doc.get("visibility") or "private",
        "organizer": doc.get("created_by") or "",
        "fee": str(int(doc.get("entry_fee_cents") or 0)),
        "money": "1" if money else "0",
    }
