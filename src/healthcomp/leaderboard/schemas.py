from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from healthcomp.core.inputs import CleanText, JsonInt, JsonNumber
from healthcomp.core.keys import ID_PATTERN

Id = Annotated[str, Field(pattern=ID_PATTERN)]


class Entry(BaseModel):
    user_id: str
    user_name: str
    competition_id: str
    score: int
    rank: int
    steps: int
    distance: int
    calories: int
    active_minutes: int
    last_synced_at: str | None
    updated_at: str | None
    joined_at: str | None


class Leaderboard(BaseModel):
    competition_id: str
    entries: list[Entry]
    total_count: int
    offset: int
    limit: int
    me: Entry | None = Field(None, description="The caller's own entry, wherever it is.")
    updated_at: str | None
    event_id: int = Field(description="The board's version: the id of the last event it reflects")
    recounting: bool = Field(description="A rule change is being recounted; exact once false")


class ScoreUpdate(BaseModel):
    """The seed's trusted write: absolute totals for one participant."""

    model_config = ConfigDict(extra="forbid")

    user_id: Id
    competition_id: Id
    steps: JsonInt | None = Field(None, ge=0, le=100_000 * 366)
    distance: JsonNumber | None = Field(None, ge=0, le=250_000 * 366)
    calories: JsonNumber | None = Field(None, ge=0, le=15_000 * 366)
    active_minutes: JsonInt | None = Field(None, ge=0, le=1_440 * 366)
    goal_days: JsonInt | None = Field(None, ge=0, le=366, description="Goal competitions only")
    reason: CleanText = Field("trusted score write", max_length=500)


class ScoreUpdateResult(BaseModel):
    entry: Entry
    previous_rank: int | None
    before: dict[str, int]
    after: dict[str, int]
    event_id: int


class UserStanding(BaseModel):
    """One of a user's competitions, with their score and rank in it."""

    model_config = ConfigDict(extra="forbid")

    competition_id: str
    name: str
    metric: str
    status: str
    score: int
    rank: int | None = Field(description="null while the user is disqualified")
    disqualified: bool
    gap_to_next_rank: int | None = Field(description="Points to the next rank up; null at 1")
    participant_count: int
    start_date: str
    end_date: str


class UserCompetitions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: str
    competitions: list[UserStanding]
