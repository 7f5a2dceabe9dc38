"""The Redis key schema, written down once.

Every key starts with the configured prefix (default `hc`). Keys that belong to one
competition share the hash tag `{c:<id>}` and keys that belong to one user share
`{u:<id>}`, so each group lives in one Redis Cluster slot and a Lua script touching
several of them stays atomic. Ids are validated (`^[A-Za-z0-9_-]{1,64}$`) before they
get here, so an id can never contain `{`, `}`, `:` or `|` and reach into another key.

`SCHEMA` below is the table of every key; `docs/ARCHITECTURE.md` carries the same
table (printed by `python -m healthcomp.core.keys`, checked by a test).
"""

from __future__ import annotations

import re
from typing import NamedTuple

ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
ID_RE = re.compile(ID_PATTERN)


def valid_id(value: str) -> bool:
    return bool(ID_RE.fullmatch(value))


class KeySpec(NamedTuple):
    pattern: str
    type: str
    owner: str
    holds: str


SCHEMA: tuple[KeySpec, ...] = (
    # --- one user: {u:U} -----------------------------------------------------------
    KeySpec("P:{u:U}:profile", "hash", "users", "display_name, avatar_url, email, created_at, updated_at"),
    KeySpec("P:{u:U}:rec", "hash", "engine", "`<day>|<source>` → `steps,distance,calories,active_minutes,synced_ms`: the latest cumulative total of that day from that source"),
    KeySpec("P:{u:U}:eff", "hash", "engine", "`<day>` → JSON `{v:[s,d,c,a], src:[…], ver, t, f, fm, fd}`: the effective day (max per metric across sources), its version, last sync, its flags (bits) when it has any, and the user's history before it (medians, MADs) once a value reached a check's floor"),
    KeySpec("P:{u:U}:cw", "hash", "engine", "`<competition>` → `start|end|deadline_ms|rules`: the windows of the user's competitions (with the rules version they come from); a sync picks its targets here"),
    KeySpec("P:{u:U}:owed", "hash", "engine", "`<competition>|<day>` → `seq,ver,s,d,c,a,synced_ms,flags,t1,t2,t3,t4`: a day still to push (snapshot of what to push); `<competition>|*` → ms: a back-fill owed by a join"),
    KeySpec("P:{u:U}:org", "zset", "competitions", "competition → its end (ms): the competitions the user organizes, to cap the open ones"),
    # --- one competition: {c:C} ----------------------------------------------------
    KeySpec("P:{c:C}:meta", "hash", "engine", "`doc` (the competition as JSON), `state` (open, cancelled, finalized), the scalar rules the scripts read, `ver` (board version = last event id), `quiet` (changes without an event: a disqualified entry's, a flag's), `clock` (last tie-order ms), `rules` (rules version), `fees` (entry fees owed), `flag_seq` (last flag id), `excluded` (days excluded by reviews)"),
    KeySpec("P:{c:C}:lb", "zset", "engine", "`<reached ms, 15 digits>:<user>` → -score: ascending order is rank order (higher score, then reached first, then user id)"),
    KeySpec("P:{c:C}:entry", "hash", "engine", "participant → JSON `{t:[s,d,c,a], g, q, sc, r, m, ls, u, j, h, dq}`: activity totals, goal days, sum of squares of the metric's days, score, tie time, board member, last sync, update, join, hour of the last movers' checkpoint, disqualified"),
    KeySpec("P:{c:C}:names", "hash", "engine", "participant → display name (copied from the profile, for one-trip pages)"),
    KeySpec("P:{c:C}:d:U", "hash", "engine", "`<day>` → `ver,s,d,c,a`: the days of participant U counted in this competition"),
    KeySpec("P:{c:C}:adj", "hash", "engine", "user → JSON `[s,d,c,a,goal_days]`: offsets of trusted writes; kept across leave and rejoin"),
    KeySpec("P:{c:C}:parts", "hash", "engine", "user → JSON participation record: state (active, left), joined, left, joins, fee owed, disqualified (when, by whom, why)"),
    KeySpec("P:{c:C}:audit", "list", "engine", "JSON audit records (trusted writes, cancels, flag reviews, disqualifications), oldest first"),
    KeySpec("P:{c:C}:dv", "zset", "engine", "the days' field: `<day>|<user>` → day number * 1000000 + the day's counted value of the metric (above zero only): each day's values in order, for medians and quartiles"),
    KeySpec("P:{c:C}:agg", "hash", "engine", "`<day>` → the day's total of the metric over the field; `+<UTC day>` / `-<UTC day>` → joins / leaves that day"),
    KeySpec("P:{c:C}:mv", "hash", "engine", "participant → `<hour>:<score>,…`: the score at the start of each hour of the last day in which it changed (movers)"),
    KeySpec("P:{c:C}:x", "set", "engine", "`<user>|<day>`: days excluded from the participant's score by a review (kept across leave and rejoin)"),
    KeySpec("P:{c:C}:fl", "hash", "engine", "flag id → JSON flag: user, day, kinds (with details), state (open, dismissed, excluded), value, review"),
    KeySpec("P:{c:C}:fk", "hash", "engine", "`<user>|<day>` → flag id: one flag per participant and day"),
    KeySpec("P:{c:C}:ev", "stream", "engine", "board events, id `<event_id>-0`, field `e` = JSON event; bounded backlog; also the pub/sub channel each event is published on"),
    KeySpec("P:{c:C}:ledger", "hash", "engine", "the final payouts, written once with the finalization: `summary` → JSON (pool, outcome, scheme, the board version frozen); `<payout id>` → JSON line (kind prize or refund, user, rank, amount, currency, reason, status)"),
    KeySpec("P:{c:C}:outbox", "stream", "engine", "one entry per payout to make (field `p` = JSON), written with the ledger, for a payment worker"),
    KeySpec("P:{c:C}:rc", "hash", "engine", "recount job: state, rules, done, total, cursor, lease, started/finished"),
    KeySpec("P:{c:C}:rcl", "list", "engine", "the recount's stable snapshot of participants"),
    KeySpec("P:{c:C}:rcd", "set", "engine", "participants the running recount has counted"),
    # --- global (each a single key, so single-slot) --------------------------------
    KeySpec("P:{ix}:S:V", "zset", "competitions", "the listing indexes: S is `all` or `pub` (public only), V is `created` (→ created ms), `upcoming` (→ start ms), `active` (→ end ms), `ended` (→ end ms), `cancelled` or `finalized` (→ closed ms)"),
    KeySpec("P:{ix}:times", "hash", "competitions", "competition → `starts_ms|ends_ms|state|created_ms|closed_ms|public`: what the listing indexes are built from"),
    KeySpec("P:{ix}:asof", "string", "competitions", "the time (ms) the listing indexes were last advanced to"),
    KeySpec("P:{ix}:closing", "zset", "competitions", "competition → when (ms) a cancel or a distribution began; removed once the listings show it closed, so the sweep finishes the listing step for a process that died between the two"),
    KeySpec("P:recounts", "set", "engine", "competitions with a recount job to run or finish"),
    KeySpec("P:lease:L", "string", "engine", "a background job's lease (sweep, recount), so one process runs it at a time"),
    KeySpec("P:rl:user:U, P:rl:ip:A", "string", "core", "rate-limit state (GCRA arrival time, µs), expires when idle"),
    KeySpec("P:health", "string", "health", "the readiness probe's write"),
    KeySpec("P:payouts:demo", "hash", "prizes", "the example payment worker's pretend provider: idempotency key (payout id) → payment reference"),
)  # fmt: skip


def schema_markdown() -> str:
    """The key table as it appears in docs/ARCHITECTURE.md."""
    lines = ["| key | type | owner | holds |", "|---|---|---|---|"]
    for spec in SCHEMA:
        holds = spec.holds.replace("|", "\\|")
        pattern = spec.pattern.replace("|", "\\|")
        lines.append(f"| `{pattern}` | {spec.type} | {spec.owner} | {holds} |")
    return "\n".join(lines)


class Keys:
    """Builds every key; nothing else in the code base formats a key by hand."""

    __slots__ = ("prefix",)

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    # --- users -----------------------------------------------------------------
    def _u(self, user_id: str) -> str:
        assert ID_RE.fullmatch(user_id), user_id
        return f"{self.prefix}:{{u:{user_id}}}"

    def profile(self, user_id: str) -> str:
        return f"{self._u(user_id)}:profile"

    def records(self, user_id: str) -> str:
        return f"{self._u(user_id)}:rec"

    def effective(self, user_id: str) -> str:
        return f"{self._u(user_id)}:eff"

    def windows(self, user_id: str) -> str:
        return f"{self._u(user_id)}:cw"

    def owed(self, user_id: str) -> str:
        return f"{self._u(user_id)}:owed"

    def organized(self, user_id: str) -> str:
        return f"{self._u(user_id)}:org"

    def user_pattern(self, suffix: str) -> str:
        """A SCAN pattern over one kind of user key (the background sweep)."""
        return f"{self.prefix}:{{u:*}}:{suffix}"

    @staticmethod
    def user_of(key: str) -> str:
        return key.split("{u:", 1)[1].split("}", 1)[0]

    # --- competitions ----------------------------------------------------------
    def _c(self, competition_id: str) -> str:
        assert ID_RE.fullmatch(competition_id), competition_id
        return f"{self.prefix}:{{c:{competition_id}}}"

    def meta(self, competition_id: str) -> str:
        return f"{self._c(competition_id)}:meta"

    def board(self, competition_id: str) -> str:
        return f"{self._c(competition_id)}:lb"

    def entries(self, competition_id: str) -> str:
        return f"{self._c(competition_id)}:entry"

    def names(self, competition_id: str) -> str:
        return f"{self._c(competition_id)}:names"

    def participant_days(self, competition_id: str, user_id: str) -> str:
        assert ID_RE.fullmatch(user_id), user_id
        return f"{self._c(competition_id)}:d:{user_id}"

    def adjustments(self, competition_id: str) -> str:
        return f"{self._c(competition_id)}:adj"

    def participations(self, competition_id: str) -> str:
        return f"{self._c(competition_id)}:parts"

    def audit(self, competition_id: str) -> str:
        return f"{self._c(competition_id)}:audit"

    def events(self, competition_id: str) -> str:
        return f"{self._c(competition_id)}:ev"

    def ledger(self, competition_id: str) -> str:
        return f"{self._c(competition_id)}:ledger"

    def outbox(self, competition_id: str) -> str:
        return f"{self._c(competition_id)}:outbox"

    def field(self, competition_id: str) -> str:
        return f"{self._c(competition_id)}:dv"

    def aggregates(self, competition_id: str) -> str:
        return f"{self._c(competition_id)}:agg"

    def movers(self, competition_id: str) -> str:
        return f"{self._c(competition_id)}:mv"

    def excluded(self, competition_id: str) -> str:
        return f"{self._c(competition_id)}:x"

    def flags(self, competition_id: str) -> str:
        return f"{self._c(competition_id)}:fl"

    def flag_index(self, competition_id: str) -> str:
        return f"{self._c(competition_id)}:fk"

    def recount(self, competition_id: str) -> str:
        return f"{self._c(competition_id)}:rc"

    def recount_list(self, competition_id: str) -> str:
        return f"{self._c(competition_id)}:rcl"

    def recount_done(self, competition_id: str) -> str:
        return f"{self._c(competition_id)}:rcd"

    # --- global indexes (each a single key, or one `{ix}` slot) -----------------
    def index(self, name: str) -> str:
        """`times`, `asof`, `closing`, or `<all|pub>:<created|upcoming|active|ended|cancelled|finalized>`."""
        assert name in _INDEXES, name
        return f"{self.prefix}:{{ix}}:{name}"

    def demo_payments(self) -> str:
        return f"{self.prefix}:payouts:demo"

    def recounts(self) -> str:
        return f"{self.prefix}:recounts"

    def lease(self, name: str) -> str:
        assert ID_RE.fullmatch(name), name
        return f"{self.prefix}:lease:{name}"

    def rate(self, kind: str, subject: str) -> str:
        """A rate-limit bucket; `subject` is a user id or an IP address."""
        return f"{self.prefix}:rl:{kind}:{subject}"

    def health_probe(self) -> str:
        return f"{self.prefix}:health"


LISTINGS = ("created", "upcoming", "active", "ended", "cancelled", "finalized")
_INDEXES = frozenset(
    {"times", "asof", "closing"}
    | {f"{scope}:{name}" for scope in ("all", "pub") for name in LISTINGS}
)


if __name__ == "__main__":  # pragma: no cover - prints the docs table
    print(schema_markdown())
