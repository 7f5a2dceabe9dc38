"""Fair play: the anomaly checks a record goes through, and their thresholds.

A flag never blocks a sync. The checks run inside the scripts that store a day:

* on the user's side (`scripts.SYNC_USER`), when a day's effective value changes, the
  record alone and the user's own history: `own_history` (a robust z-score on the
  median and MAD of the user's previous days), `stride` (distance per step outside a
  human stride) and `no_active_minutes` (counts far beyond what the active minutes
  allow). The result is kept with the effective day (`f`, `fm` in `eff`) and travels
  with it to every competition that counts it;
* on the competition's side (`scripts.APPLY`), what needs the competition:
  `field_outlier` (far above the day's field, on the quartiles of the day's values),
  `late_raise` (raised substantially after the competition's end, in the grace period)
  and `late_backfill` (a day before the join, synced only after joining, at or near the
  daily cap).

docs/ANALYTICS.md explains each check and states the false-positive rate measured on a
synthetic field (`python -m bench.flags`).
"""

from __future__ import annotations

from typing import Any

from healthcomp.engine.model import METRIC_NAMES

# The kinds of flag, as the API names them.
OWN_HISTORY = "own_history"
STRIDE = "stride"
NO_ACTIVE_MINUTES = "no_active_minutes"
FIELD_OUTLIER = "field_outlier"
LATE_RAISE = "late_raise"
LATE_BACKFILL = "late_backfill"
KINDS = (OWN_HISTORY, STRIDE, NO_ACTIVE_MINUTES, FIELD_OUTLIER, LATE_RAISE, LATE_BACKFILL)

# Per metric (steps, distance m, calories kcal, active minutes).
CAPS = (100_000, 250_000, 15_000, 1_440)  # the daily caps of a record (SPEC §6.1)
# A day is compared with the user's history or the field only from these values on:
# below them nothing is worth a reviewer's time, and most syncs skip the checks.
FLOORS = (20_000, 15_000, 4_000, 240)
# A late raise counts when the day grew by at least this much and by LATE_RATIO.
LATE_MIN = (3_000, 2_500, 500, 45)
LATE_RATIO = 0.25
NEAR_CAP = 0.9  # "at or near the daily cap": at least this share of it

# own_history: the previous HISTORY_DAYS days with a value, at least MIN_HISTORY of
# them; flagged when 0.6745 (x - median) / MAD >= OWN_Z and x >= OWN_RATIO x median.
# The MAD is taken as at least a tenth of the median, so a very regular user is not
# flagged for an ordinary good day.
HISTORY_DAYS = 60
MIN_HISTORY = 7
OWN_Z = 6.0
OWN_RATIO = 2.5

# stride: distance / steps outside [STRIDE_MIN, STRIDE_MAX] metres, once both steps and
# distance are at least STRIDE_FROM (short walks round badly).
STRIDE_MIN = 0.3
STRIDE_MAX = 2.5
STRIDE_FROM = 1_000
# no_active_minutes: at least MINUTES_STEPS steps at more than CADENCE_MAX steps per
# active minute, or at least MINUTES_DISTANCE metres at more than SPEED_MAX metres per
# active minute (a fast runner's cadence and speed).
MINUTES_STEPS = 30_000
CADENCE_MAX = 250
MINUTES_DISTANCE = 30_000
SPEED_MAX = 500

# field_outlier: at least FIELD_MIN participants with a value that day; flagged when
# x > median + FIELD_Z x (Q3 - Q1) / 1.349 and x >= FIELD_RATIO x median.
FIELD_MIN = 20
FIELD_Z = 8.0
FIELD_RATIO = 3.0

# The bits of a day's user-side flags (`f` in `eff`): own_history per metric, then the
# record's physical checks.
OWN_BITS = (1, 2, 4, 8)
STRIDE_BIT = 16
MINUTES_BIT = 32


def lua() -> str:
    """The thresholds as Lua locals, for the scripts' preludes."""

    def table(values: tuple[float, ...]) -> str:
        return "{" + ", ".join(repr(v) for v in values) + "}"

    return f"""
local CAPS, FLOORS, LATE_MIN = {table(CAPS)}, {table(FLOORS)}, {table(LATE_MIN)}
local LATE_RATIO, NEAR_CAP = {LATE_RATIO}, {NEAR_CAP}
local HISTORY_DAYS, MIN_HISTORY, OWN_Z, OWN_RATIO = {HISTORY_DAYS}, {MIN_HISTORY}, {OWN_Z}, {OWN_RATIO}
local STRIDE_MIN, STRIDE_MAX, STRIDE_FROM = {STRIDE_MIN}, {STRIDE_MAX}, {STRIDE_FROM}
local MINUTES_STEPS, CADENCE_MAX = {MINUTES_STEPS}, {CADENCE_MAX}
local MINUTES_DISTANCE, SPEED_MAX = {MINUTES_DISTANCE}, {SPEED_MAX}
local FIELD_MIN, FIELD_Z, FIELD_RATIO = {FIELD_MIN}, {FIELD_Z}, {FIELD_RATIO}
local STRIDE_BIT, MINUTES_BIT = {STRIDE_BIT}, {MINUTES_BIT}
local METRICS = {{'{"', '".join(METRIC_NAMES)}'}}
"""


def record_kinds(bits: int, typical: list[int] | None) -> list[dict[str, Any]]:
    """A day's user-side flags (the bits kept with the effective day) as the API shows
    them: `own_history` per metric with the user's typical value, `stride`,
    `no_active_minutes`."""
    out: list[dict[str, Any]] = []
    for i, bit in enumerate(OWN_BITS):
        if bits & bit:
            median = typical[i] if typical else None
            out.append({"kind": OWN_HISTORY, "metric": METRIC_NAMES[i], "typical": median})
    if bits & STRIDE_BIT:
        out.append({"kind": STRIDE})
    if bits & MINUTES_BIT:
        out.append({"kind": NO_ACTIVE_MINUTES})
    return out
