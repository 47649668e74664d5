"""Log throttling: one report per period and kind, and every held-back report accounted for."""

from __future__ import annotations

from itertools import accumulate, pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_klines.core.throttle import LogThrottle


def test_one_report_per_period_with_the_count_of_those_held_back() -> None:
    throttle = LogThrottle(60)
    assert throttle.admit("malformed", 0) == 0  # the first one always goes out
    assert throttle.admit("malformed", 1) is None
    assert throttle.admit("error", 2) == 0  # kinds are throttled apart
    assert throttle.admit("malformed", 59.9) is None
    assert throttle.suppressed("malformed") == 2
    assert throttle.admit("malformed", 60) == 2
    assert throttle.suppressed("malformed") == 0


def test_a_period_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        LogThrottle(0)


@given(
    every=st.floats(0.01, 100),
    reports=st.lists(st.tuples(st.floats(0, 50), st.sampled_from(["malformed", "error", "other"])), max_size=200),
)
def test_reports_of_a_kind_go_out_at_least_a_period_apart_and_none_is_lost(
    every: float, reports: list[tuple[float, str]]
) -> None:
    throttle = LogThrottle(every)
    times = list(accumulate(dt for dt, _ in reports))
    let_through: dict[str, list[float]] = {}
    told: dict[str, int] = {}  # reports of each kind either logged or counted in a logged one
    for now, (_, kind) in zip(times, reports, strict=True):
        held = throttle.admit(kind, now)
        if held is not None:
            let_through.setdefault(kind, []).append(now)
            told[kind] = told.get(kind, 0) + 1 + held
    for sent in let_through.values():
        assert all(b >= a + every for a, b in pairwise(sent))
    for kind in {k for _, k in reports}:
        total = sum(k == kind for _, k in reports)
        assert told.get(kind, 0) + throttle.suppressed(kind) == total
        first = next(t for t, (_, k) in zip(times, reports, strict=True) if k == kind)
        assert let_through[kind][0] == first  # the first report of a kind is never held back
