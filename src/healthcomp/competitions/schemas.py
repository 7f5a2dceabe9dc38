"""Competition bodies and views (SPEC §6.2), validated field by field."""

from __future__ import annotations

import itertools
from datetime import date
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator

from healthcomp.core.inputs import CleanName, CleanText, JsonDecimal, JsonInt
from healthcomp.core.keys import ID_PATTERN
from healthcomp.core.money import ISO_4217

Metric = Literal["steps", "distance", "calories", "active_minutes"]
METRICS: tuple[Metric, ...] = ("steps", "distance", "calories", "active_minutes")
# Per-day caps (SPEC §6.1); also the bound of a goal's daily target.
DAILY_CAPS: dict[str, int] = {
    "steps": 100_000,
    "distance": 250_000,
    "calories": 15_000,
    "active_minutes": 1_440,
}
MAX_WINDOW_DAYS = 366
# The days a competition may run on: activity is kept from 2000-01-01 (SPEC §6.1).
EARLIEST_DATE, LATEST_DATE = date(2000, 1, 1), date(2999, 12, 31)
MAX_CENTS = 10**12
Status = Literal["upcoming", "active", "ended", "finalized", "cancelled"]
Visibility = Literal["private", "public"]
CompetitionId = Annotated[str, Field(pattern=ID_PATTERN, examples=["nov-10k"])]
# The bounds sit on the type, not on the fields: on an optional field's own `Field`,
# pydantic could not write them into the schema (it wrote `ge`, `le` as unknown keys).
Percent = Annotated[JsonDecimal, Field(ge=0, le=100, decimal_places=2)]


class TopN(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # Required: the payout union finds its member by `scheme` (`{}` was never taken).
    scheme: Literal["top_n"]
    percentages: list[JsonDecimal] = Field(
        default_factory=lambda: [Decimal(60), Decimal(30), Decimal(10)],
        min_length=1,
        max_length=100,
    )

    @field_validator("percentages")
    @classmethod
    def _sum_to_100(cls, value: list[Decimal]) -> list[Decimal]:
        if any(p <= 0 for p in value):
            raise ValueError("every percentage must be above 0")
        if any(p.as_tuple().exponent < -2 for p in value):  # type: ignore[operator]
            raise ValueError("percentages have at most 2 decimal places")
        if sum(value) != 100:
            raise ValueError(f"percentages must add up to 100, not {sum(value)}")
        if any(later > earlier for earlier, later in itertools.pairwise(value)):
            # A worse place never gets more (docs/PRIZES.md).
            raise ValueError("percentages must not grow down the places")
        return value


class WinnerTakesAll(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scheme: Literal["winner_takes_all"]


class QualifiersSplit(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scheme: Literal["qualifiers_split"]


Payout = Annotated[TopN | WinnerTakesAll | QualifiersSplit, Field(discriminator="scheme")]


class Goal(BaseModel):
    model_config = ConfigDict(extra="forbid")
    daily_target: JsonInt = Field(gt=0, le=250_000, examples=[10_000])
    min_days: JsonInt = Field(ge=1, le=MAX_WINDOW_DAYS, examples=[20])


_CURRENCIES: list[JsonValue] = [*sorted(ISO_4217)]


def _currency(value: str) -> str:
    if value not in ISO_4217:
        raise ValueError("must be an ISO 4217 currency code such as USD or EUR")
    return value


class _Rules(BaseModel):
    """Fields shared by create and edit; all optional here, required-ness below."""

    model_config = ConfigDict(extra="forbid")

    name: CleanName | None = Field(None, min_length=1, max_length=120)
    description: CleanText | None = Field(None, max_length=2000)
    metric: Metric | None = None
    start_date: date | None = None
    end_date: date | None = None
    format: Literal["ranked", "goal"] | None = None
    goal: Goal | None = None
    entry_fee_cents: JsonInt | None = Field(None, ge=0, le=MAX_CENTS)
    currency: str | None = Field(
        None, pattern=r"^[A-Z]{3}$", json_schema_extra={"enum": _CURRENCIES}
    )
    prize_pool_cents: JsonInt | None = Field(None, ge=0, le=MAX_CENTS)
    rake_percent: Percent | None = None
    payout: Payout | None = None
    min_participants: JsonInt | None = Field(None, ge=1, le=1_000_000)
    max_participants: JsonInt | None = Field(None, ge=1, le=10_000_000)
    grace_hours: JsonInt | None = Field(None, ge=0, le=168)
    visibility: Visibility | None = None

    @field_validator("currency")
    @classmethod
    def _iso(cls, value: str | None) -> str | None:
        return None if value is None else _currency(value)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = " ".join(value.split())
        if not value:
            raise ValueError("must not be blank")
        return value


class CompetitionCreate(_Rules):
    id: CompetitionId | None = None
    name: CleanName = Field(min_length=1, max_length=120, examples=["November 10k a day"])
    metric: Metric = "steps"
    start_date: date = Field(examples=["2026-11-01"])
    end_date: date = Field(examples=["2026-11-30"])
    format: Literal["ranked", "goal"] = "ranked"
    entry_fee_cents: JsonInt = Field(0, ge=0, le=MAX_CENTS)
    currency: str = Field("USD", pattern=r"^[A-Z]{3}$", json_schema_extra={"enum": _CURRENCIES})
    prize_pool_cents: JsonInt = Field(0, ge=0, le=MAX_CENTS)
    rake_percent: Percent = Field(Decimal(0), json_schema_extra={"default": 0})
    min_participants: JsonInt = Field(1, ge=1, le=1_000_000)
    grace_hours: JsonInt = Field(24, ge=0, le=168)
    visibility: Visibility = Field(
        "private",
        description="private: the board and its participants only for participants, the "
        "organizer and the service role; public: the board for any signed-in user",
    )


class CompetitionUpdate(_Rules):
    """PATCH: only the fields given change."""


def rule_errors(doc: dict[str, Any]) -> list[dict[str, str]]:
    """Cross-field rules of a whole competition (after create, or after a patch),
    as `details` items that name the field at fault."""
    errors: list[dict[str, str]] = []

    def bad(field: str, message: str) -> None:
        errors.append({"field": field, "message": message, "type": "value_error"})

    start, end = doc["start_date"], doc["end_date"]
    if isinstance(start, str):
        start, end = date.fromisoformat(start), date.fromisoformat(end)
    days = (end - start).days + 1
    for field, day in (("start_date", start), ("end_date", end)):
        if not EARLIEST_DATE <= day <= LATEST_DATE:
            # Past the calendar's end, the deadline (the end plus a day plus the
            # grace period) cannot even be computed: a 500 before.
            bad(field, f"{field} must be between {EARLIEST_DATE} and {LATEST_DATE}")
    if errors:
        return errors
    if end < start:
        bad("end_date", "end_date must not be before start_date")
    elif days > MAX_WINDOW_DAYS:
        bad("end_date", f"a competition lasts at most {MAX_WINDOW_DAYS} days")
    maxp = doc.get("max_participants")
    if maxp is not None and maxp < doc["min_participants"]:
        bad("max_participants", "max_participants must not be below min_participants")
    payout = doc.get("payout")
    scheme = payout.get("scheme") if isinstance(payout, dict) else None
    goal = doc.get("goal")
    if doc["format"] == "goal":
        if goal is None:
            bad("goal", "a goal competition needs goal {daily_target, min_days}")
        else:
            if goal["min_days"] > max(days, 0):
                bad("goal.min_days", "min_days exceeds the number of days in the competition")
            if goal["daily_target"] > DAILY_CAPS[doc["metric"]]:
                bad("goal.daily_target", "daily_target exceeds the daily cap of the metric")
    else:
        if goal is not None:
            bad("goal", "goal is only for format 'goal'")
        if scheme == "qualifiers_split":
            bad("payout", "payout 'qualifiers_split' is only for format 'goal'")
    return errors


class RecountState(BaseModel):
    state: Literal["running", "done"]
    done: int
    total: int


class Money(BaseModel):
    cents: int
    amount: str
    currency: str


class Competition(BaseModel):
    id: str
    name: str
    description: str
    metric: Metric
    start_date: date
    end_date: date
    format: Literal["ranked", "goal"]
    goal: Goal | None
    entry_fee_cents: int
    currency: str
    prize_pool_cents: int
    rake_percent: float = Field(description="A percentage (not money), e.g. 2.5")
    payout: dict[str, Any] = Field(
        examples=[{"scheme": "top_n", "percentages": [60, 30, 10]}],
    )
    min_participants: int
    max_participants: int | None
    grace_hours: int
    visibility: Visibility
    created_by: str | None = Field(description="The organizer; null when a service created it")
    created_at: str
    updated_at: str
    status: Status
    participant_count: int
    entry_fee_amount: str
    prize_pool_amount: str
    accepts_syncs_until: str
    recount: RecountState | None = Field(
        description="The last recount after a rule change; the board is exact once it is done"
    )
    event_id: int = Field(description="The board's version: the id of its last event")


class AuditRecord(BaseModel):
    at: str = Field(description="When (RFC 3339, the service's clock)")
    by: str = Field(description="Who: a user id, or `service`")
    action: str = Field(description="`set_totals` (a trusted write) or `cancel`")
    reason: str
    event_id: int | None = None
    user_id: str | None = Field(None, description="Whose entry a trusted write set")
    before: list[int] | None = Field(
        None, description="steps, distance, calories, active_minutes, goal_days before"
    )
    after: list[int] | None = None
    score_before: int | None = None
    score_after: int | None = None


class AuditPage(BaseModel):
    competition_id: str
    records: list[AuditRecord]


class CompetitionPage(BaseModel):
    items: list[Competition]
    total_count: int
    limit: int
    offset: int
