"""A stored competition, its time window and derived status."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import orjson

from healthcomp.competitions.schemas import METRICS
from healthcomp.core.clock import from_ms, to_ms
from healthcomp.core.money import display_amount

# A calendar day starts first at UTC+14 (Line Islands) and ends last at UTC-12
# (Baker Island). A competition "has started" once its first day began anywhere and
# "has ended" once its last day is over everywhere.
EARLIEST_OFFSET = timedelta(hours=14)
LATEST_OFFSET = timedelta(hours=-12)


def day_start_utc(day: date, offset: timedelta) -> datetime:
    return datetime.combine(day, time(0), UTC) - offset


@dataclass(frozen=True)
class Stored:
    """The competition as kept in `meta` (doc JSON + scalar fields Lua reads)."""

    doc: dict[str, Any]
    state: str  # open | cancelled | finalized
    participant_count: int

    @property
    def id(self) -> str:
        return str(self.doc["id"])

    @property
    def start(self) -> date:
        return date.fromisoformat(self.doc["start_date"])

    @property
    def end(self) -> date:
        return date.fromisoformat(self.doc["end_date"])

    @property
    def organizer(self) -> str | None:
        """The creator's user id; None when the service role created it."""
        creator = self.doc.get("created_by")
        return str(creator) if creator else None

    def organized_by(self, user_id: str | None) -> bool:
        return user_id is not None and user_id == self.organizer

    @property
    def starts_at(self) -> datetime:
        return day_start_utc(self.start, EARLIEST_OFFSET)

    @property
    def ends_at(self) -> datetime:
        return day_start_utc(self.end + timedelta(days=1), LATEST_OFFSET)

    @property
    def deadline(self) -> datetime:
        """Syncs for the window's days count until here (end everywhere + grace)."""
        return self.ends_at + timedelta(hours=int(self.doc["grace_hours"]))

    def status(self, now: datetime) -> str:
        if self.state in ("cancelled", "finalized"):
            return self.state
        if now < self.starts_at:
            return "upcoming"
        if now < self.ends_at:
            return "active"
        return "ended"

    def accepts_day(self, day: date, now: datetime) -> bool:
        return self.state == "open" and self.start <= day <= self.end and now <= self.deadline

    def view(self, now: datetime) -> dict[str, Any]:
        doc = {k: v for k, v in self.doc.items() if k not in _INTERNAL}
        return {
            "id": doc.pop("id"),
            **doc,
            "rake_percent": _number(doc["rake_percent"]),
            "payout": _payout_view(doc["payout"]),
            "status": self.status(now),
            "participant_count": self.participant_count,
            "entry_fee_amount": display_amount(doc["entry_fee_cents"], doc["currency"]),
            "prize_pool_amount": display_amount(doc["prize_pool_cents"], doc["currency"]),
            "accepts_syncs_until": from_ms(to_ms(self.deadline)),
        }


# Kept in the stored doc for the scripts, not part of the API.
_INTERNAL = frozenset({"epoch_ms"})


def _number(value: str | int | float) -> int | float:
    dec = Decimal(str(value))
    return int(dec) if dec == dec.to_integral_value() else float(dec)


def _payout_view(payout: dict[str, Any]) -> dict[str, Any]:
    if "percentages" in payout:
        return {**payout, "percentages": [_number(p) for p in payout["percentages"]]}
    return payout


def meta_fields(doc: dict[str, Any]) -> dict[str, str]:
    """The scalar fields the Lua scripts read, beside the JSON doc."""
    stored = Stored(doc, "open", 0)
    goal = doc.get("goal") or {}
    maxp = doc.get("max_participants")
    return {
        "doc": orjson.dumps(doc).decode(),
        "start_date": doc["start_date"],
        "end_date": doc["end_date"],
        "ends_ms": str(to_ms(stored.ends_at)),
        "deadline_ms": str(to_ms(stored.deadline)),
        "metric_idx": str(METRICS.index(doc["metric"])),
        "format": doc["format"],
        "daily_target": str(goal.get("daily_target", 0)),
        "max_participants": str(maxp if maxp is not None else 0),
        "epoch_ms": str(doc["epoch_ms"]),
    }
