"""Response shapes of the analytics route (documented in OpenAPI; the route encodes
dicts directly)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class Window(BaseModel):
    start_date: str
    end_date: str
    days: int
    days_elapsed: int = Field(description="Window days begun by today (UTC), today included")
    days_remaining: int


class Day(BaseModel):
    date: str
    participants: int = Field(
        description="The field: everyone on the board (a late joiner's earlier days count "
        "too, so every day has the same field)"
    )
    active_participants: int = Field(description="Counted with a value above zero that day")
    joined: int = Field(description="Sign-ups that UTC day (those before the first day on it)")
    left: int = Field(description="Leaves that UTC day")
    total: int = Field(description="The day's total of the metric over the field")
    median: float = Field(description="The median of the active participants' values")


class Bin(BaseModel):
    from_: int = Field(alias="from")
    to: int = Field(description="Exclusive, except for the last bin")
    count: int


class Distribution(BaseModel):
    count: int
    min: int | None
    max: int | None
    mean: float | None
    percentiles: dict[str, float] = Field(description="p10, p25, p50, p75, p90, p99")
    histogram: list[Bin]


class Mover(BaseModel):
    user_id: str
    user_name: str
    score: int
    gain: int = Field(description="Score gained since the start of the hour 24 hours ago")
    rank: int
    previous_rank: int = Field(description="The rank that score 24 hours ago had then")


class Standing(BaseModel):
    user_id: str
    user_name: str
    rank: int
    score: int
    projected_score: int | None = Field(description="Where the participant's pace ends")
    projected_range: list[int] | None = Field(description="An 80% range around it")
    projected_rank: int | None
    chance_to_win: float | None = Field(description="The share of simulated finishes won")


class FlagCounts(BaseModel):
    total: int
    open: int
    dismissed: int
    excluded: int
    open_by_kind: dict[str, int]


class Disqualified(BaseModel):
    user_id: str
    user_name: str
    score: int


class Analytics(BaseModel):
    competition_id: str
    metric: str
    format: str
    status: str
    view: str = Field(description="`summary` for participants, `full` for the organizer")
    event_id: int = Field(description="The board version these figures reflect")
    window: Window
    participants: int = Field(description="On the board now")
    days: list[Day]
    distribution: Distribution
    movers: list[Mover] = Field(description="Biggest gains of the last 24 hours")
    leaders: list[Standing]
    simulations: int = Field(
        description="Simulated finishes behind chance_to_win (0 before the start)"
    )
    me: Standing | None = Field(description="The caller's own standing, when on the board")
    flags: FlagCounts | None = Field(None, description="Full view only")
    disqualified: list[Disqualified] | None = Field(None, description="Full view only")
