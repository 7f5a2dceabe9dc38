"""Prizes and payouts (SPEC §6.5): the pool, who wins what, to the minor unit.

`allocate` is the arithmetic: exact shares of a pool by place weights or equally among
qualifiers, ties sharing the places they occupy, whole units by largest remainder.
"""
