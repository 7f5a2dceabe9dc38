"""Projected finishes and the chance to win, from each participant's own pace.

The model (docs/ANALYTICS.md says more, and where it is wrong):

* **Ranked competitions.** A participant's counted days so far give a daily mean `m`
  (their activity total over the days elapsed, days without a sync counting as zero)
  and a day-to-day variance `v` (from the sum of squares the engine keeps). The
  variance is shrunk towards the field's median variance, as if `PRIOR_DAYS` typical
  days had been seen too, so one or two days do not make anyone certain. The remaining
  `R` days then add a total that is normal with mean `R m` and variance `R v + R^2 v / E`:
  the days' own spread plus the uncertainty of the pace itself after `E` days. It is
  clipped to [0, R x the daily cap].
* **Goal competitions.** The score is the number of days the goal was met; each
  remaining day is met with probability `p`, drawn for every simulation from the Beta
  posterior of the days so far (`g + 1`, `E - g + 1`), so the remaining goal days are
  binomial.
* **The chance to win** is the share of simulated finishes in which a participant ends
  highest; a tie at the top splits that simulation equally, and a finish of zero wins
  nothing (only scores above zero can win, as with prizes). Only those who could still
  plausibly catch the leader are simulated (mean + 5 sd of the final at least the best
  mean - 5 sd); everyone else gets 0. The simulation is seeded from the competition
  and the board version: the same data gives the same numbers.

numpy is imported inside `project`, so a worker that never serves analytics never loads
it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

SIMULATIONS = 4000
PRIOR_DAYS = 3.0
MAX_CONTENDERS = 1000  # simulated at most (the likeliest winners)
_CHUNK = 500  # simulations per step, to bound memory
_Z80 = 1.2815515655446004  # the 90th percentile of the standard normal: an 80% range


@dataclass(frozen=True)
class Runner:
    """A participant on the board, as the projection sees them."""

    user_id: str
    score: int  # the current score (with any trusted adjustment)
    counted: float  # the sum of the counted days' metric (goal: the goal days met)
    squares: float  # the sum of their squares (goal: the goal days met)


@dataclass(frozen=True)
class Projection:
    user_id: str
    expected: int  # the projected final score
    low: int  # an 80% range around it
    high: int
    rank: int  # the rank of `expected` among every projection
    chance_to_win: float


def seed_of(*parts: object) -> int:
    """A stable 64-bit seed from the parts (the competition id, the board version)."""
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def ranks(values: Sequence[float]) -> list[int]:
    """Standard competition ranks, highest first (equal values share a rank)."""
    order = sorted(range(len(values)), key=lambda i: -values[i])
    ranks = [0] * len(values)
    for pos, i in enumerate(order):
        if pos and values[i] == values[order[pos - 1]]:
            ranks[i] = ranks[order[pos - 1]]
        else:
            ranks[i] = pos + 1
    return ranks


def project(
    runners: Sequence[Runner],
    *,
    elapsed: int,
    remaining: int,
    goal: bool,
    daily_cap: int,
    seed: int,
    simulations: int = SIMULATIONS,
) -> list[Projection]:
    """Every runner's projected final score, its 80% range, its projected rank and the
    chance to win, in the order given. `elapsed` days so far (at least 1), `remaining`
    days to come (0 once the window is over)."""
    import numpy as np

    n = len(runners)
    if n == 0:
        return []
    elapsed = max(1, elapsed)
    score = np.array([r.score for r in runners], dtype=np.float64)
    counted = np.array([r.counted for r in runners], dtype=np.float64)
    squares = np.array([r.squares for r in runners], dtype=np.float64)
    if goal:
        p = (counted + 1.0) / (elapsed + 2.0)
        mean = remaining * p
        # Beta-binomial variance of the remaining goal days.
        a, b = counted + 1.0, elapsed - counted + 1.0
        var = remaining * a * b * (a + b + remaining) / ((a + b) ** 2 * (a + b + 1.0))
    else:
        pace = counted / elapsed
        spread = np.maximum(squares / elapsed - pace * pace, 0.0)
        prior = float(np.median(spread))
        spread = (elapsed * spread + PRIOR_DAYS * prior) / (elapsed + PRIOR_DAYS)
        mean = remaining * pace
        var = remaining * spread + remaining * remaining * spread / elapsed
    sd = np.sqrt(var)
    expected = score + mean
    ceiling = float(remaining * (1 if goal else daily_cap))
    low = score + np.clip(mean - _Z80 * sd, 0.0, ceiling)
    high = score + np.clip(mean + _Z80 * sd, 0.0, ceiling)

    # The contenders: whoever may still finish above the leader's likely worst.
    final_sd = np.sqrt(var)
    best_low = float(np.max(expected - 5.0 * final_sd))
    reach = expected + 5.0 * final_sd
    contenders = np.flatnonzero(reach >= best_low)
    if len(contenders) > MAX_CONTENDERS:
        contenders = contenders[np.argsort(-reach[contenders], kind="stable")[:MAX_CONTENDERS]]
    rng = np.random.default_rng(seed)
    wins = np.zeros(len(contenders))
    base, mu, sigma = score[contenders], mean[contenders], sd[contenders]
    done = 0
    while done < simulations:
        size = min(_CHUNK, simulations - done)
        if remaining == 0:
            finals = np.broadcast_to(base, (size, len(contenders)))
        elif goal:
            a = counted[contenders] + 1.0
            b = elapsed - counted[contenders] + 1.0
            chance_day = rng.beta(a, b, size=(size, len(contenders)))
            finals = base + rng.binomial(remaining, chance_day)
        else:
            draw = rng.normal(mu, sigma, size=(size, len(contenders)))
            finals = base + np.clip(draw, 0.0, ceiling)
        top = finals.max(axis=1, keepdims=True)
        winners = (finals >= top) & (top > 0)
        shares = winners.sum(axis=1, keepdims=True)
        wins += (winners / np.maximum(shares, 1)).sum(axis=0)
        done += size
    chance = np.zeros(n)
    chance[contenders] = wins / simulations

    rounded = [round(float(x)) for x in expected]
    ranked = ranks(rounded)
    return [
        Projection(
            user_id=r.user_id,
            expected=rounded[i],
            low=round(float(low[i])),
            high=round(float(high[i])),
            rank=ranked[i],
            chance_to_win=float(chance[i]),
        )
        for i, r in enumerate(runners)
    ]
