"""The engine's reply codes: every script answers a table whose first element is one.

One enum for every script, so a code means the same thing wherever it comes from; the
Lua side gets the same numbers from `lua_constants()`.
"""

from __future__ import annotations

from enum import IntEnum


class Reply(IntEnum):
    OK = 0
    NO_COMPETITION = 1  # no such competition
    CLOSED = 2  # cancelled or finalized
    ENDED = 3  # its last day is over everywhere (join, leave, organizer's cancel)
    PAST_DEADLINE = 4  # past end + grace (trusted writes by an organizer)
    NOT_PARTICIPANT = 5
    ALREADY_JOINED = 6
    FULL = 7  # max_participants reached
    STALE = 8  # the competition changed since it was read (optimistic edit)
    TOO_MANY = 9  # max_participants below the participants already in
    NOT_VISIBLE = 10  # private, and the caller is not in it
    SERVICE_ONLY = 11  # money involved: only the service role writes
    NOT_RANKED = 12  # `around` names someone who is not on the board
    EXISTS = 13  # the id is taken
    NOT_MINE = 14  # a sync names a competition the user is not in
    NOT_FOUND = 15  # no such ledger line, or flag
    DISQUALIFIED = 16  # the participant is disqualified (no trusted write on the entry)


def lua_constants() -> str:
    """`local OK, NO_COMPETITION, … = 0, 1, …` for the scripts' prelude."""
    names = ", ".join(r.name for r in Reply)
    values = ", ".join(str(int(r)) for r in Reply)
    return f"local {names} = {values}\n"
