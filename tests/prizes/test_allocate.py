"""The payout arithmetic (healthcomp.prizes.allocate), by property and by example."""

from __future__ import annotations

import itertools
from decimal import Decimal
from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from healthcomp.prizes.allocate import Entrant, by_places, equally, rake, weights_of


def field(scores: list[int]) -> list[Entrant]:
    """Entrants in the order given, each reaching their score one ms after the last;
    ranks by standard competition ranking."""
    return [
        Entrant(f"u{i}", s, 1 + sum(1 for t in scores if t > s), reached=i)
        for i, s in enumerate(scores)
    ]


def paid(awards: list) -> dict[str, int]:
    return {a.user_id: a.cents for a in awards}


@st.composite
def schemes(draw: st.DrawFn) -> list[Fraction]:
    """Non-increasing percentages with two decimals, adding up to 100."""
    n = draw(st.integers(1, 6))
    cuts = sorted(draw(st.lists(st.integers(1, 9999), min_size=n - 1, max_size=n - 1, unique=True)))
    parts = [b - a for a, b in zip([0, *cuts], [*cuts, 10000], strict=True)]
    parts = sorted((p for p in parts if p > 0), reverse=True)
    return [Fraction(p, 100) for p in parts]


@given(
    pool=st.integers(0, 10**9),
    scores=st.lists(st.integers(0, 50), min_size=0, max_size=30),
    weights=schemes(),
)
def test_places_pay_the_pool_exactly_and_fairly(
    pool: int, scores: list[int], weights: list[Fraction]
) -> None:
    entrants = field(scores)
    awards = by_places(pool, entrants, weights)
    got = paid(awards)
    by_id = {e.user_id: e for e in entrants}
    # Only scores above zero win; the pool is paid whole when anyone can win.
    assert all(by_id[u].score > 0 for u in got)
    if pool > 0 and any(s > 0 for s in scores):
        assert sum(got.values()) == pool
    else:
        assert got == {}
    # Tied winners differ by at most one unit; a better score never gets less.
    ordered = sorted(got, key=lambda u: (-by_id[u].score, by_id[u].reached))
    for a, b in itertools.pairwise(ordered):
        if by_id[a].score == by_id[b].score:
            assert abs(got[a] - got[b]) <= 1
        assert got[a] >= got[b] or by_id[a].score == by_id[b].score
    # A tie group is paid together: nobody tied with a winner is left out.
    winning_scores = {by_id[u].score for u in got}
    assert all(e.user_id in got for e in entrants if e.score in winning_scores)


@given(pool=st.integers(0, 10**9), scores=st.lists(st.integers(0, 40), max_size=30))
def test_qualifiers_split_equally(pool: int, scores: list[int]) -> None:
    entrants = [
        Entrant(e.user_id, e.score, e.rank, e.reached, qualified=e.score >= 20)
        for e in field(scores)
    ]
    got = paid(equally(pool, entrants))
    winners = [e.user_id for e in entrants if e.score >= 20]
    if pool > 0 and winners:
        assert set(got) == set(winners) and sum(got.values()) == pool
        assert max(got.values()) - min(got.values()) <= 1
    else:
        assert got == {}


def test_ties_share_the_places_they_occupy() -> None:
    # Pool 100.00, scores 50, 40, 40, 10, split 60/30/10: 60.00, 20.00, 20.00, nothing.
    awards = by_places(10000, field([50, 40, 40, 10]), weights_of([60, 30, 10]))
    assert paid(awards) == {"u0": 6000, "u1": 2000, "u2": 2000}
    assert [(a.place_from, a.place_to) for a in awards] == [(1, 1), (2, 3), (2, 3)]


def test_a_cent_among_three_tied_goes_to_who_got_there_first() -> None:
    awards = by_places(1, field([7, 7, 7]), weights_of([60, 30, 10]))
    assert paid(awards) == {"u0": 1, "u1": 0, "u2": 0}


def test_fewer_winners_than_places_scale_up() -> None:
    # 60/30/10 with two winners: 60/90 and 30/90 of 100.00.
    awards = by_places(10000, field([5, 3, 0, 0]), weights_of([60, 30, 10]))
    assert paid(awards) == {"u0": 6667, "u1": 3333}


def test_a_yen_pool_has_no_minor_units_to_split() -> None:
    # JPY: the units are yen. 1,000 yen, three tied winners of 60/30/10.
    awards = by_places(1000, field([9, 9, 9]), weights_of([60, 30, 10]))
    assert sorted(paid(awards).values(), reverse=True) == [334, 333, 333]
    assert paid(awards)["u0"] == 334


def test_rake_rounds_half_to_even() -> None:
    assert rake(250, Decimal("1")) == 2  # 2.5 -> 2
    assert rake(350, Decimal("1")) == 4  # 3.5 -> 4
    assert rake(10000, Decimal("2.5")) == 250


def test_leftover_units_go_by_largest_remainder_not_largest_share() -> None:
    # 7 units at 60/30/10: exact 4.2, 2.1, 0.7. The one unit left goes to the largest
    # remainder (0.7, third place), not to the largest share.
    awards = by_places(7, field([3, 2, 1]), weights_of([60, 30, 10]))
    assert paid(awards) == {"u0": 4, "u1": 2, "u2": 1}
    assert [(a.rank, a.place_from, a.place_to) for a in awards] == [(1, 1, 1), (2, 2, 2), (3, 3, 3)]


def test_an_empty_pool_pays_nobody() -> None:
    # Not a list of zero awards: no award at all (a ledger line of 0.00 is no payout).
    assert by_places(0, field([5, 3]), weights_of([60, 30, 10])) == []
    assert equally(0, field([5, 3])) == []
    assert by_places(100, field([5, 3]), []) == []


def test_qualifiers_above_zero_share_one_place() -> None:
    # A qualifier with a score of 1 wins; one with 0 does not. Both winners occupy the
    # places 1..2 together; the odd unit goes to the better rank.
    entrants = field([1, 0, 5])
    awards = equally(101, entrants)
    assert paid(awards) == {"u2": 51, "u0": 50}
    assert [(a.user_id, a.place_from, a.place_to) for a in awards] == [
        ("u2", 1, 2),
        ("u0", 1, 2),
    ]


def test_a_pool_of_one_unit_is_paid() -> None:
    # The smallest pool there is still goes to someone (by places and among qualifiers).
    assert paid(equally(1, field([3, 2]))) == {"u0": 1, "u1": 0}
    assert paid(by_places(1, field([3, 2]), weights_of([60, 30, 10]))) == {"u0": 1, "u1": 0}
