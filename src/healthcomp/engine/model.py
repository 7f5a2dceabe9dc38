"""What the engine's scripts answer, as typed values."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from healthcomp.engine.codes import Reply

METRIC_NAMES = ("steps", "distance", "calories", "active_minutes")


@dataclass(frozen=True)
class Push:
    """One effective day owed to one competition (a mark in the user's `owed` hash)."""

    competition_id: str
    day: str
    seq: int
    ver: int
    values: tuple[int, int, int, int]
    synced_ms: int
    flags: int = 0  # the day's user-side flags (engine/flags.py bits)
    typical: tuple[int, int, int, int] = (0, 0, 0, 0)  # the user's medians, where looked at

    @property
    def field(self) -> str:
        return f"{self.competition_id}|{self.day}"


def parse_pushes(flat: Sequence[Any]) -> list[Push]:
    """`field, value` pairs (after the reply code) into pushes."""
    out: list[Push] = []
    for i in range(1, len(flat) - 1, 2):
        cid, day = str(flat[i]).split("|", 1)
        parts = [int(x) for x in str(flat[i + 1]).split(",")]
        seq, ver, s, d, c, a, t = parts[:7]
        # (a mark from before flags has seven fields)
        bits, m1, m2, m3, m4 = parts[7:12] if len(parts) >= 12 else [0] * 5
        out.append(Push(cid, day, seq, ver, (s, d, c, a), t, bits, (m1, m2, m3, m4)))
    return out


@dataclass(frozen=True)
class Applied:
    """A competition's answer to a push or a write."""

    code: Reply
    score: int = 0
    rank: int | None = 0  # None: disqualified (off the board)
    previous_rank: int | None = None
    event_id: int = 0
    changed: bool = False


@dataclass(frozen=True)
class Recount:
    state: str  # running | done
    done: int
    total: int

    def view(self) -> dict[str, Any]:
        return {"state": self.state, "done": self.done, "total": self.total}


@dataclass(frozen=True)
class CompetitionRecord:
    """A competition as stored: its document, state and what the engine keeps beside."""

    doc: dict[str, Any]
    state: str  # open | cancelled | finalized
    participant_count: int
    version: int
    recount: Recount | None
    closed_ms: int | None = None  # when it was cancelled or finalized (the script's clock)


@dataclass(frozen=True)
class Row:
    user_id: str
    score: int
    rank: int
    entry: dict[str, Any]
    name: str
    offsets: list[int]

    def totals(self) -> dict[str, int]:
        raw = self.entry.get("t", [0, 0, 0, 0])
        return {
            name: max(0, int(raw[i]) + int(self.offsets[i])) for i, name in enumerate(METRIC_NAMES)
        }


# A row as the page script answers it: user, score, rank, entry JSON, name, adjustments.
RawRow = tuple[Any, ...]


def parse_row(values: Sequence[Any]) -> Row:
    user, score, rank, entry, name, adj = values
    return Row(
        user_id=str(user),
        score=int(score),
        rank=int(rank),
        entry=orjson.loads(entry) if entry else {},
        name=str(name) if name else str(user),
        offsets=orjson.loads(adj) if adj else [0, 0, 0, 0, 0],
    )


@dataclass(frozen=True)
class Page:
    total: int
    start: int
    event_id: int
    updated_ms: int | None
    recount: Recount | None
    rows: list[RawRow]  # parse_row() makes a Row of one
    caller: RawRow | None
    # The caller has an entry (may see a private board), ranked or not.
    caller_is_participant: bool = False


@dataclass(frozen=True)
class BoardState:
    """What a cached page is checked against before it is served."""

    version: int
    public: bool
    organizer: str
    updated_ms: int | None
    recounting: bool


@dataclass(frozen=True)
class Standing:
    score: int
    rank: int | None  # None: disqualified
    entry: dict[str, Any]
    gap_to_next: int | None


@dataclass(frozen=True)
class Event:
    """A board event as stored in the competition's stream (`event_id` = version)."""

    event_id: int
    data: dict[str, Any]


def parse_event(raw: bytes | str) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads(raw)
    # Lua's JSON encoder writes an empty list as `{}`.
    for name in ("passed", "passed_by", "passed_ranks", "passed_by_ranks"):
        if name in data and not data[name]:
            data[name] = []
    return data


@dataclass(frozen=True)
class Contender:
    """A participant at the top of the board, as a payout reads them."""

    user_id: str
    score: int
    reached_ms: int  # when the score was reached: the board's tie order
    name: str


@dataclass(frozen=True)
class PayoutInputs:
    state: str  # open | cancelled | finalized
    version: int
    fees_owed: int  # minor units: the entry fees of the active participations
    participants: int
    top: list[Contender]  # in board order


def payout_id(cid: str, kind: str, user_id: str) -> str:
    """A ledger line's id and its payment's idempotency key: `<competition>:<kind>:<user>`
    (the cancel script writes its refunds' ids the same way)."""
    return f"{cid}:{kind}:{user_id}"


@dataclass(frozen=True)
class FieldDay:
    """One day of a competition's field: the counted values of its metric."""

    day: str
    total: int
    active: int  # participants with a value above zero
    median: float  # of those values (0 when none)


@dataclass(frozen=True)
class AnalyticsInputs:
    """What a competition's analytics are computed from, read at once
    (`scripts.ANALYTICS`)."""

    version: int
    quiet: int  # changes without an event (scripts.ANALYTICS)
    state: str
    days: list[FieldDay]
    board: list[tuple[str, int]]  # (user, score) in rank order
    entries: dict[str, dict[str, Any]]  # every participant's entry, off the board too
    names: dict[str, str]
    movers: dict[str, str]  # participant -> `<hour>:<score>,…`
    joins: dict[str, int]  # UTC day -> joins that day
    leaves: dict[str, int]


@dataclass(frozen=True)
class Reviewed:
    code: Reply
    changed: bool = False
    flag: dict[str, Any] | None = None
    event_id: int = 0


@dataclass(frozen=True)
class Disqualified:
    code: Reply
    changed: bool = False
    event_id: int = 0
    score: int = 0
    rank: int | None = None
