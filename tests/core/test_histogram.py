"""The writer's histograms: Prometheus' cumulative buckets."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_klines.core.histogram import LATENCY_BUCKETS, Histogram

pytestmark = pytest.mark.timeout(60)


@given(st.lists(st.tuples(st.floats(0, 1e6, allow_nan=False), st.integers(1, 5)), max_size=50))
def test_each_bucket_counts_the_observations_at_most_its_bound(observed: list[tuple[float, int]]) -> None:
    h = Histogram(LATENCY_BUCKETS)
    for value, times in observed:
        h.observe(value, times)
    cumulative = h.cumulative()
    assert [b for b, _ in cumulative] == [*LATENCY_BUCKETS, float("inf")]
    for bound, count in cumulative:
        assert count == sum(t for v, t in observed if v <= bound)
    assert h.count == sum(t for _, t in observed)
    assert h.sum == pytest.approx(sum(v * t for v, t in observed))


def test_bounds_must_be_numbers() -> None:
    with pytest.raises(ValueError, match="bucket bounds"):
        Histogram([])
    with pytest.raises(ValueError, match="bucket bounds"):
        Histogram([1.0, float("nan")])
