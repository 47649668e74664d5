"""Gap finding and the continuity tracker: property tests against a brute-force model."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_klines.core.gaps import VALUES_MEMORY, ContinuityTracker, Gap, RangeSet, Verdict, find_gaps, missing_count
from trio_klines.core.markets import (
    INTERVALS,
    Series,
    floor_open_time,
    iter_open_times,
    next_open_time,
    open_time_index,
)

intervals = st.sampled_from(list(INTERVALS))


@st.composite
def grids(draw: st.DrawFn) -> tuple[Series, list[int]]:
    """A series and the first N open times of its grid from a random start."""
    interval = draw(intervals)
    t = floor_open_time(interval, draw(st.integers(1_500_000_000_000, 3_000_000_000_000)))
    times = []
    for _ in range(draw(st.integers(1, 80))):
        times.append(t)
        t = next_open_time(interval, t)
    return Series("spot", "BTCUSDT", interval), times


def covered(gaps: list[Gap]) -> list[int]:
    return [t for g in gaps for t in iter_open_times(g.series.interval, g.start, g.end)]


@settings(max_examples=300)
@given(grids(), st.data())
def test_gaps_are_exactly_the_missing_open_times(grid: tuple[Series, list[int]], data: st.DataObject) -> None:
    series, times = grid
    present = data.draw(st.lists(st.sampled_from(times), max_size=len(times)))
    start, end = times[0], next_open_time(series.interval, times[-1])
    gaps = find_gaps(series, present, start, end)
    assert covered(gaps) == [t for t in times if t not in set(present)]
    assert missing_count(gaps) == len(times) - len(set(present))
    assert all(g.start < g.end for g in gaps)
    assert all(a.end < b.start for a, b in itertools.pairwise(gaps))  # disjoint, apart, sorted


@given(grids(), st.data())
def test_without_bounds_only_inner_holes_count(grid: tuple[Series, list[int]], data: st.DataObject) -> None:
    series, times = grid
    present = data.draw(st.lists(st.sampled_from(times), min_size=1, max_size=len(times)))
    inner = [t for t in times if min(present) < t < max(present) and t not in set(present)]
    assert covered(find_gaps(series, present)) == inner


def test_find_gaps_edge_cases() -> None:
    s = Series("spot", "BTCUSDT", "1m")
    assert find_gaps(s, []) == []
    assert find_gaps(s, [], 0, 180_000) == [Gap(s, 0, 180_000)]
    assert find_gaps(s, [60_000], 30_000, 90_000) == []  # no open time between 30 s and 60 s
    assert str(Gap(s, 0, 180_000)) == (
        "spot BTCUSDT-1m: 3 candle(s) missing from 1970-01-01T00:00:00Z to 1970-01-01T00:03:00Z"
    )


@settings(max_examples=300)
@given(grids(), st.data())
def test_tracker_matches_a_model(grid: tuple[Series, list[int]], data: st.DataObject) -> None:
    series, times = grid
    arrivals = data.draw(st.lists(st.sampled_from(times), min_size=1, max_size=150))
    tracker = ContinuityTracker(memory=1000)
    seen: set[int] = set()
    newest: int | None = None
    reported: list[Gap] = []
    for t in arrivals:
        verdict, gap = tracker.observe(series, t)
        if t in seen:
            assert verdict is Verdict.DUPLICATE
            assert gap is None
        elif newest is not None and t < newest:
            assert verdict is Verdict.LATE
        else:
            assert verdict is Verdict.NEW
            expected = None if newest is None else next_open_time(series.interval, newest)
            assert (gap is not None) == (expected is not None and t > expected)
        if gap is not None:
            reported.append(gap)
        seen.add(t)
        newest = t if newest is None else max(newest, t)
    assert tracker.last_open_time(series) == newest
    # Every open time skipped by the newest candle was reported once, in a gap.
    skipped = covered(reported)
    assert len(skipped) == len(set(skipped))


def test_tracker_memory_is_bounded_and_seeding_works() -> None:
    s = Series("usdt_futures", "ETHUSDT", "1m")
    tracker = ContinuityTracker(memory=2)
    for minute in range(1, 5):
        tracker.observe(s, minute * 60_000)
    assert tracker.observe(s, 4 * 60_000) == (Verdict.DUPLICATE, None)
    assert tracker.observe(s, 1 * 60_000) == (Verdict.LATE, None)  # forgotten, taken as late
    fresh = ContinuityTracker()
    fresh.seed(s, 10 * 60_000)
    fresh.seed(s, 5 * 60_000)  # an older seed does not move it back
    assert fresh.last_open_time(s) == 10 * 60_000
    assert fresh.observe(s, 10 * 60_000) == (Verdict.DUPLICATE, None)
    assert fresh.observe(s, 12 * 60_000) == (Verdict.NEW, Gap(s, 11 * 60_000, 12 * 60_000))
    with pytest.raises(ValueError, match="memory"):
        ContinuityTracker(memory=0)


def test_tracker_costs_the_same_after_a_long_run() -> None:
    s = Series("spot", "BTCUSDT", "1s")
    tracker = ContinuityTracker(memory=64)
    for second in range(100_000):
        tracker.observe(s, second * 1000)
    state = tracker._series[s]
    assert state.seen.bit_length() <= 64  # one bounded integer, however many candles went by
    assert tracker.observe(s, 99_937 * 1000) == (Verdict.DUPLICATE, None)  # 62 back: remembered
    assert tracker.observe(s, 99_935 * 1000) == (Verdict.LATE, None)  # 64 back: forgotten


range_ops = st.lists(st.tuples(st.sampled_from(["add", "remove"]), st.integers(0, 60), st.integers(0, 60)), max_size=30)


@settings(max_examples=300)
@given(range_ops, st.integers(0, 60), st.integers(0, 60))
def test_range_set_matches_a_set_of_points(ops: list[tuple[str, int, int]], lo: int, hi: int) -> None:
    ranges, points = RangeSet(), set()
    for op, a, b in ops:
        if op == "add":
            ranges.add(a, b)
            points |= set(range(a, b))
        else:
            ranges.remove(a, b)
            points -= set(range(a, b))
    held = [t for start, end in ranges for t in range(start, end)]
    assert held == sorted(points)
    assert all(a[1] < b[0] for a, b in zip(list(ranges), list(ranges)[1:], strict=False))  # merged
    missing = [t for start, end in ranges.missing(lo, hi) for t in range(start, end)]
    assert missing == [t for t in range(lo, hi) if t not in points]
    assert ranges.covers(lo, hi) == (not missing)


@settings(max_examples=300)
@given(grids(), st.data())
def test_a_repeat_is_dropped_only_with_its_last_values(grid: tuple[Series, list[int]], data: st.DataObject) -> None:
    """Issue 13: the same open time closed twice with other values is written again (the later write wins);
    a true repeat of one of the last candles is still dropped."""
    series, times = grid
    arrivals = data.draw(st.lists(st.tuples(st.sampled_from(times), st.integers(0, 2)), min_size=1, max_size=150))
    tracker = ContinuityTracker(memory=1000)
    written: dict[int, int] = {}  # open time → fingerprint of the candle last written
    slot_owner: dict[int, int] = {}  # index % VALUES_MEMORY → open time last written there
    for t, value in arrivals:
        fingerprint = hash((t, value))  # as hash(candle): the open time is part of it
        verdict, _ = tracker.observe(series, t, fingerprint)
        slot = open_time_index(series.interval, t) % VALUES_MEMORY
        if t not in written:
            assert verdict in (Verdict.NEW, Verdict.LATE)
        elif written[t] != fingerprint:
            assert verdict is Verdict.REVISED
        elif slot_owner[slot] == t:
            assert verdict is Verdict.DUPLICATE
        else:
            assert verdict is Verdict.REVISED  # its values are no longer known: written again, harmless
        if verdict is not Verdict.DUPLICATE:
            written[t], slot_owner[slot] = fingerprint, t


def test_revised_and_seeded_candles() -> None:
    s = Series("spot", "BTCUSDT", "1m")
    tracker = ContinuityTracker()
    tracker.seed(s, 10 * 60_000)
    assert tracker.observe(s, 10 * 60_000, 123)[0] is Verdict.DUPLICATE  # the stored one: values unknown
    assert tracker.observe(s, 11 * 60_000, 1)[0] is Verdict.NEW
    assert tracker.observe(s, 11 * 60_000, 1)[0] is Verdict.DUPLICATE
    assert tracker.observe(s, 11 * 60_000, 2)[0] is Verdict.REVISED
    assert tracker.observe(s, 11 * 60_000, 2)[0] is Verdict.DUPLICATE
    assert tracker.observe(s, 11 * 60_000, 1)[0] is Verdict.REVISED  # back to the first: the later wins
    assert tracker.observe(s, 11 * 60_000)[0] is Verdict.DUPLICATE  # no fingerprint: as before
