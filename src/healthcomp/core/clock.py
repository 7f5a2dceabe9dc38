"""Time, behind an object so tests can move it."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta


class Clock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def today(self) -> date:
        return self.now().date()


class FixedClock(Clock):
    """A clock that stands still until told otherwise (tests, the demo)."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def now(self) -> datetime:
        return self.at

    def advance(self, **delta: float) -> None:
        self.at += timedelta(**delta)


def rfc3339(value: datetime) -> str:
    """`2026-11-26T16:28:07.123Z`: UTC, millisecond precision, `Z`."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def from_ms(ms: int) -> str:
    return rfc3339(datetime.fromtimestamp(ms / 1000, UTC))


def to_ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)
