"""A stored competition, its time window and derived status."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from healthcomp.core.clock import from_ms, to_ms
from healthcomp.core.money import display_amount
from healthcomp.engine import rules
from healthcomp.engine.model import CompetitionRecord, Recount


@dataclass(frozen=True)
class Stored:
    """The competition as kept by the engine, with what the API derives from it."""

    doc: dict[str, Any]
    state: str  # open | cancelled | finalized
    participant_count: int
    version: int = 0
    recount: Recount | None = None
    closed_ms: int | None = None  # when it was cancelled or finalized

    @classmethod
    def of(cls, record: CompetitionRecord) -> Stored:
        return cls(
            record.doc,
            record.state,
            record.participant_count,
            record.version,
            record.recount,
            record.closed_ms,
        )

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

    @property
    def is_public(self) -> bool:
        return self.doc.get("visibility") == "public"

    def organized_by(self, user_id: str | None) -> bool:
        return user_id is not None and user_id == self.organizer

    @property
    def starts_at(self) -> datetime:
        return rules.starts_at(self.start)

    @property
    def ends_at(self) -> datetime:
        return rules.ends_at(self.end)

    @property
    def deadline(self) -> datetime:
        """Syncs for the window's days count until here (end everywhere + grace)."""
        return rules.deadline(self.end, int(self.doc["grace_hours"]))

    @property
    def created_ms(self) -> int:
        return int(self.doc["created_ms"])

    def status(self, now: datetime) -> str:
        if self.state in ("cancelled", "finalized"):
            return self.state
        if now < self.starts_at:
            return "upcoming"
        if now < self.ends_at:
            return "active"
        return "ended"

    def view(self, now: datetime) -> dict[str, Any]:
        doc = {k: v for k, v in self.doc.items() if k not in _INTERNAL}
        return {
            "id": doc.pop("id"),
            **doc,
            "visibility": doc.get("visibility") or "private",
            "rake_percent": _number(doc["rake_percent"]),
            "payout": _payout_view(doc["payout"]),
            "status": self.status(now),
            "participant_count": self.participant_count,
            "entry_fee_amount": display_amount(doc["entry_fee_cents"], doc["currency"]),
            "prize_pool_amount": display_amount(doc["prize_pool_cents"], doc["currency"]),
            "accepts_syncs_until": from_ms(to_ms(self.deadline)),
            "recount": self.recount.view() if self.recount else None,
            "event_id": self.version,
        }


# Kept in the stored doc for the engine and the indexes, not part of the API.
_INTERNAL = frozenset({"created_ms"})


def _number(value: str | int | float) -> int | float:
    dec = Decimal(str(value))
    return int(dec) if dec == dec.to_integral_value() else float(dec)


def _payout_view(payout: dict[str, Any]) -> dict[str, Any]:
    if "percentages" in payout:
        return {**payout, "percentages": [_number(p) for p in payout["percentages"]]}
    return payout
