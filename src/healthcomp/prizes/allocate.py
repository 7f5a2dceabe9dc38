"""Who gets how many minor units of a pool: pure arithmetic, exact (SPEC §6.5).

* Only a score above zero wins.
* Places are paid by weight (a scheme's percentages). Participants tied on a score
  occupy as many places as they are, and share the weights of those places equally
  (places 2 and 3 tied: each gets (p2 + p3) / 2). Places past the last weight pay
  nothing.
* With fewer winners than paid places, the weights of the places that exist are scaled
  up so the whole pool is paid.
* Shares are exact fractions of the pool; each winner gets the whole minor units of
  theirs, and the minor units left over go one each by largest remainder, equal
  remainders to the better rank, then to whoever reached the score first. So the
  amounts always add up to the pool, tied winners differ by at most one unit, and, with
  weights that never grow down the places, no one gets more than someone ranked above.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction


@dataclass(frozen=True)
class Entrant:
    """A participant as the payout sees them, in board order."""

    user_id: str
    score: int
    rank: int  # standard competition rank (1, 2, 2, 4)
    reached: int  # when the score was reached (ms, the engine's one clock): earlier first
    qualified: bool = True  # for `qualifiers_split`: met the goal on enough days


@dataclass(frozen=True)
class Award:
    user_id: str
    rank: int
    cents: int
    place_from: int  # the places (1-based) this winner's tie group occupies
    place_to: int


def board_order(entrants: Sequence[Entrant]) -> list[Entrant]:
    return sorted(entrants, key=lambda e: (-e.score, e.reached, e.user_id))


def by_places(pool: int, entrants: Sequence[Entrant], weights: Sequence[Fraction]) -> list[Award]:
    """`pool` minor units over the places weighted by `weights` (top_n: the
    percentages; winner_takes_all: one place)."""
    winners = [e for e in board_order(entrants) if e.score > 0]
    if pool <= 0 or not winners or not weights:
        return []
    paid = list(weights[: len(winners)])  # fewer winners than places: those that exist
    groups: list[list[Entrant]] = []
    for entrant in winners:
        if groups and groups[-1][0].score == entrant.score:
            groups[-1].append(entrant)
        else:
            groups.append([entrant])
    shares: list[tuple[Entrant, Fraction, int, int]] = []
    place = 0
    for group in groups:
        if place >= len(paid):
            break
        weight = sum(paid[place : place + len(group)], Fraction(0))
        for entrant in group:
            shares.append((entrant, weight / len(group), place + 1, place + len(group)))
        place += len(group)
    return _in_units(pool, shares)


def equally(pool: int, entrants: Sequence[Entrant]) -> list[Award]:
    """`qualifiers_split`: every qualifier with a score above zero, one equal share."""
    winners = [e for e in board_order(entrants) if e.score > 0 and e.qualified]
    if pool <= 0 or not winners:
        return []
    count = len(winners)
    return _in_units(pool, [(e, Fraction(1), 1, count) for e in winners])


def _in_units(pool: int, shares: list[tuple[Entrant, Fraction, int, int]]) -> list[Award]:
    total = sum((weight for _, weight, _, _ in shares), Fraction(0))
    exact = [
        (entrant, pool * weight / total, first, last) for entrant, weight, first, last in shares
    ]
    units = {entrant.user_id: int(value) for entrant, value, _, _ in exact}  # floor: >= 0
    left = pool - sum(units.values())
    by_remainder = sorted(
        exact, key=lambda x: (-(x[1] - int(x[1])), x[0].rank, x[0].reached, x[0].user_id)
    )
    for entrant, _, _, _ in by_remainder[:left]:
        units[entrant.user_id] += 1
    return [
        Award(entrant.user_id, entrant.rank, units[entrant.user_id], first, last)
        for entrant, _, first, last in exact
    ]


def rake(fees: int, percent: Decimal) -> int:
    """The rake on the entry fees, in minor units, rounded half to even."""
    return int((Decimal(fees) * percent / 100).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def weights_of(percentages: Sequence[Decimal | int | float | str]) -> list[Fraction]:
    return [Fraction(Decimal(str(p))) for p in percentages]
