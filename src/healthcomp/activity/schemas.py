"""Sync bodies (SPEC §6.1): the seed's single record, or a batch of records."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    WithJsonSchema,
    field_validator,
)

from healthcomp.core.inputs import JsonInt, JsonNumber
from healthcomp.core.keys import ID_PATTERN
from healthcomp.leaderboard.schemas import UserStanding

MAX_BATCH = 400
SOURCE_PATTERN = r"^[A-Za-z0-9_.-]{1,32}$"
UserId = Annotated[str, Field(pattern=ID_PATTERN)]


# The offsets clocks on Earth use: UTC-12:00 to UTC+14:00 (SPEC §6.1 allows ±14:00).
MAX_OFFSET = dt.timedelta(hours=14)


def _local_day(value: Any) -> Any:
    """A bare date, or a datetime whose own (local) calendar date is taken; its UTC
    offset, when it has one, within ±14:00."""
    moment: dt.datetime | None = value if isinstance(value, dt.datetime) else None
    if moment is None and isinstance(value, str) and len(value) > 10:
        try:
            moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
    if moment is None:
        return value
    offset = moment.utcoffset()
    if offset is not None and abs(offset) > MAX_OFFSET:
        raise ValueError("a UTC offset must be within ±14:00")
    return moment.date()


# What `_local_day` takes, as the schema says it (a bare `format: date` refused the
# datetimes of the examples).
_DAY_SCHEMA: dict[str, Any] = {
    "anyOf": [{"type": "string", "format": "date"}, {"type": "string", "format": "date-time"}],
    "description": "The user's local calendar day: a date, or a datetime whose own date "
    "is taken (its UTC offset within ±14:00)",
}


class Record(BaseModel):
    """One day's cumulative totals from one source. Re-sending replaces, never adds."""

    model_config = ConfigDict(extra="forbid")

    user_id: UserId | None = None
    competition_id: Annotated[str, Field(pattern=ID_PATTERN)] | None = None
    date: Annotated[dt.date, WithJsonSchema(_DAY_SCHEMA)] = Field(
        examples=["2026-11-10", "2026-11-10T21:30:00-08:00"]
    )
    steps: JsonInt = Field(0, ge=0, le=100_000)
    distance: JsonNumber = Field(0, ge=0, le=250_000, description="metres")
    calories: JsonNumber = Field(0, ge=0, le=15_000, description="kcal")
    active_minutes: JsonInt = Field(0, ge=0, le=1_440)
    source: str = Field("google_fit", pattern=SOURCE_PATTERN)

    _day = field_validator("date", mode="before")(_local_day)

    def values(self) -> tuple[int, int, int, int]:
        # Whole metres and kcal: halves round to even, never through the float twice.
        return (self.steps, round(self.distance), round(self.calories), self.active_minutes)


class Batch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: UserId | None = None
    competition_id: Annotated[str, Field(pattern=ID_PATTERN)] | None = None
    records: list[Record] = Field(min_length=1, max_length=MAX_BATCH)


class CompetitionResult(BaseModel):
    competition_id: str
    score: int
    rank: int | None = Field(description="null while the participant is disqualified")
    previous_rank: int | None


class SyncResult(BaseModel):
    records_accepted: int
    competitions: list[CompetitionResult]


def _kind(value: Any) -> str:
    return "batch" if isinstance(value, dict | Batch) and "records" in value else "record"


# One record (the seed's body) or a batch; the errors name only the shape that was sent.
SyncBody = Annotated[
    Annotated[Batch, Tag("batch")] | Annotated[Record, Tag("record")],
    Discriminator(_kind),
]


# --- response shapes (documented in OpenAPI; the routes encode dicts directly) ---


class _View(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Totals(_View):
    steps: int
    distance: int
    calories: int
    active_minutes: int


class Averages(_View):
    steps: float
    distance: float
    calories: float
    active_minutes: float


class BestDay(_View):
    date: str
    value: int


class BestDays(_View):
    steps: BestDay | None
    distance: BestDay | None
    calories: BestDay | None
    active_minutes: BestDay | None


class CompetitionStanding(_View):
    competition_id: str
    metric: str
    score: int
    rank: int | None = Field(description="null while the participant is disqualified")
    disqualified: bool
    gap_to_next_rank: int | None
    participant_count: int
    projected_final_score: int | None = Field(
        description="Where the participant's own pace ends (docs/ANALYTICS.md); null while "
        "disqualified"
    )
    projected_final_rank: int | None = Field(
        description="The rank of that projection among every participant's projection"
    )
    start_date: str
    end_date: str


class Stats(_View):
    user_id: str
    totals: Totals
    daily_averages: Averages
    active_days: int
    days_recorded: int
    best_day: BestDays
    step_goal: int
    current_streak: int
    longest_streak: int
    last_7_days: Totals
    last_30_days: Totals
    first_day: str | None
    last_day: str | None
    competitions: list[UserStanding] | None = Field(
        None, description="Without competition_id: every competition of the user"
    )
    competition: CompetitionStanding | None = Field(
        None, description="With competition_id: the standing in it"
    )


class SourceDay(_View):
    steps: int
    distance: int
    calories: int
    active_minutes: int
    synced_at: str


class HistoryDay(_View):
    date: str
    steps: int
    distance: int
    calories: int
    active_minutes: int
    sources: dict[str, SourceDay]
    last_synced_at: str | None
    flags: list[dict[str, Any]] = Field(
        description="The day's anomaly flags from the record's own checks (own_history, "
        "stride, no_active_minutes; docs/ANALYTICS.md); only for the user themself"
    )


class History(_View):
    user_id: str
    from_: str = Field(alias="from")
    to: str
    days: list[HistoryDay]
