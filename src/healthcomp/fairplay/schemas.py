"""Request and response shapes of the fair-play review routes."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

State = Literal["open", "dismissed", "excluded"]


class ReviewBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    action: Literal["dismiss", "exclude", "restore"] = Field(
        description=(
            "`exclude` takes the day out of this competition's score; `dismiss` keeps it "
            "(and counts it again if it was excluded); `restore` counts it again and opens "
            "the flag for review"
        )
    )
    reason: str = Field(min_length=1, max_length=500, description="Why: kept in the audit")


class DecisionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=500, description="Why: kept in the audit")


class Review(BaseModel):
    by: str | None
    at: str
    reason: str


class Flag(BaseModel):
    id: str
    competition_id: str
    user_id: str
    user_name: str
    date: str = Field(description="The flagged day (the participant's local calendar day)")
    state: State
    kinds: list[dict[str, Any]] = Field(
        description="What was found, each `{kind, …details}`: own_history, stride, "
        "no_active_minutes, field_outlier, late_raise, late_backfill (docs/ANALYTICS.md)"
    )
    value: int | None = Field(description="The day's value of the metric when last flagged")
    counted: dict[str, int] | None = Field(
        description="The day as the competition holds it now (steps, distance, calories, "
        "active_minutes); counted in the score unless the flag is excluded"
    )
    metric: str
    created_at: str
    updated_at: str
    reviews: int
    last_review: Review | None


class Disqualification(BaseModel):
    user_id: str
    at: str
    by: str | None
    reason: str


class FlagPage(BaseModel):
    competition_id: str
    scope: Literal["all", "own"] = Field(
        description="`all` for the organizer and the service role, `own` for a participant"
    )
    counts: dict[str, int] = Field(description="Flags by state (in this scope)")
    total: int = Field(description="Flags matching the filter")
    limit: int
    offset: int
    flags: list[Flag]
    disqualified: list[Disqualification]


class Standing(BaseModel):
    user_id: str
    score: int
    rank: int | None


class Reviewed(BaseModel):
    flag: Flag
    changed: bool = Field(description="false when the flag was in that state already")
    event_id: int = Field(description="The board event the decision made (or the last one)")
    participant: Standing | None


class Decision(BaseModel):
    competition_id: str
    user_id: str
    disqualified: bool
    changed: bool
    score: int
    rank: int | None = Field(description="null while disqualified")
    event_id: int
