"""The Redis key schema, written down once.

Every key starts with the configured prefix (default `hc`). Keys that belong to one
competition share the hash tag `{c:<id>}` and keys that belong to one user share
`{u:<id>}`, so each group lives in one Redis Cluster slot and a Lua script or MULTI
touching several of them stays atomic. Ids are validated (`^[A-Za-z0-9_-]{1,64}$`)
before they get here, so an id can never contain `{`, `}` or `:` and reach into
another key.

| key | type | holds |
|---|---|---|
| `P:{u:U}:profile` | hash | display_name, avatar_url, email, created_at, updated_at |
| `P:{u:U}:rec` | hash | `<day>\\|<source>` -> `steps,distance,calories,active_minutes,synced_at` |
| `P:{u:U}:eff` | hash | `<day>` -> JSON `{v: [s,d,c,a], src: [...], t: synced_at}` (max across sources) |
| `P:{u:U}:comps` | set | ids of competitions the user joined (an index; the competition is the truth) |
| `P:{u:U}:dirty` | hash | `<competition>\\|<day>` -> sequence: days still to push (crash repair) |
| `P:{c:C}:meta` | hash | the competition's fields (JSON values) |
| `P:{c:C}:lb` | zset | participant -> composite score (score, then who reached it first) |
| `P:{c:C}:entry` | hash | participant -> JSON totals, score, reached_at, synced and joined times |
| `P:{c:C}:d:U` | hash | `<day>` -> `ver,steps,distance,calories,active_minutes` as pushed into C for user U |
| `P:{c:C}:names` | hash | participant -> display name (copied from the profile, for one-trip pages) |
| `P:{c:C}:adj` | hash | participant -> JSON adjustment offsets of trusted score writes |
| `P:{c:C}:audit` | list | JSON audit records (trusted writes, cancels), newest last |
| `P:rl:user:U`, `P:rl:ip:A` | string | rate-limit state (GCRA arrival time, µs), expires when idle |
| `P:competitions` | zset | competition id -> created_at (epoch ms), for listing |
"""

from __future__ import annotations

import re

ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
ID_RE = re.compile(ID_PATTERN)


def valid_id(value: str) -> bool:
    return bool(ID_RE.fullmatch(value))


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

    def user_competitions(self, user_id: str) -> str:
        return f"{self._u(user_id)}:comps"

    def user_dirty(self, user_id: str) -> str:
        return f"{self._u(user_id)}:dirty"

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

    def participant_days(self, competition_id: str, user_id: str) -> str:
        assert ID_RE.fullmatch(user_id), user_id
        return f"{self._c(competition_id)}:d:{user_id}"

    def names(self, competition_id: str) -> str:
        return f"{self._c(competition_id)}:names"

    def adjustments(self, competition_id: str) -> str:
        return f"{self._c(competition_id)}:adj"

    def audit(self, competition_id: str) -> str:
        return f"{self._c(competition_id)}:audit"

    # --- global indexes (each a single key, so single-slot) ---------------------
    def competitions(self) -> str:
        return f"{self.prefix}:competitions"

    def rate(self, kind: str, subject: str) -> str:
        """A rate-limit bucket; `subject` is a user id or an IP address."""
        return f"{self.prefix}:rl:{kind}:{subject}"

    def health_probe(self) -> str:
        return f"{self.prefix}:health"
