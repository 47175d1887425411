"""Bounded values for messages (supermask.core.values)."""

from __future__ import annotations

import math

from supermask.core.values import is_finite_number, shorten, show


def test_shorten_keeps_short_text_and_says_how_long_long_text_was() -> None:
    assert shorten("k=0.5") == "k=0.5"
    long = "x" * 5000
    out = shorten(long)
    assert len(out) < 70 and out.endswith("...(5000 characters)") and out.startswith("x" * 40)
    assert shorten("abcdef" * 20, limit=30) == "abcdefabcd...(120 characters)"


def test_show_never_prints_a_huge_or_deeply_nested_value_whole() -> None:
    assert show(0.5) == "0.5" and show("a") == "'a'"
    assert show(list(range(1000))) == "<list of 1000 items>"
    assert show({i: i for i in range(21)}) == "<dict of 21 items>"
    nested: list = []
    for _ in range(100_000):
        nested = [nested]
    assert show(nested) == "<a deeply nested list>"
    assert len(show("y" * 10_000)) < 70


def test_a_finite_number_is_a_real_number_that_fits_a_float() -> None:
    assert is_finite_number(3) and is_finite_number(-0.5) and is_finite_number(1e308)
    assert not is_finite_number(True) and not is_finite_number("1") and not is_finite_number(None)
    assert not is_finite_number(math.inf) and not is_finite_number(math.nan) and not is_finite_number(10**400)
