"""Backoff delays: full jitter under an exponential, capped ceiling."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_klines.core.backoff import Backoff


@given(
    st.floats(0.01, 10),
    st.floats(1, 8),
    st.floats(10, 100),
    st.integers(0, 2**32),
    st.integers(1, 200),
)
def test_delays_stay_under_the_ceiling(initial: float, multiplier: float, maximum: float, seed: int, n: int) -> None:
    b = Backoff(initial, maximum, multiplier, rng=random.Random(seed))
    for attempt in range(n):
        ceiling = min(maximum, initial * multiplier**attempt)
        assert b.ceiling() == pytest.approx(ceiling)
        assert 0 <= b.next_delay() <= ceiling
    b.reset()
    assert b.ceiling() == initial


def test_jitter_is_spread_and_seeded() -> None:
    delays = [Backoff(1, 1, rng=random.Random(3)).next_delay() for _ in range(1)]
    b = Backoff(1, 1, rng=random.Random(3))
    many = [b.next_delay() for _ in range(1000)]
    assert many[0] == delays[0]
    assert min(many) < 0.05 and max(many) > 0.95


def test_bad_parameters() -> None:
    with pytest.raises(ValueError, match="initial"):
        Backoff(0, 1)
    with pytest.raises(ValueError, match="initial"):
        Backoff(2, 1)
    with pytest.raises(ValueError, match="multiplier"):
        Backoff(1, 2, 0.5)
