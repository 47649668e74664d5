"""Homes of new rows (segments.plan_homes): every row one home, ranges disjoint for good, segments capped."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_klines.core.markets import INTERVALS
from trio_klines.store.compaction import FileInfo
from trio_klines.store.layout import MAX_ROWS_PER_FILE, FileName
from trio_klines.store.segments import SEGMENT_MIN_ROWS, Home, plan_homes, segment_rows

PERIOD = "2024-01"


def segment(seq: int, first: int, last: int, rows: int | None = None) -> FileInfo:
    return FileInfo(FileName(PERIOD, seq, seq), last - first + 1 if rows is None else rows, first, last)


def times(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


@st.composite
def periods(draw: st.DrawFn) -> tuple[list[FileInfo], np.ndarray, int]:
    """Disjoint segments (given in any order) of a period of 0..999, sorted unique new times, a cap."""
    bounds = draw(st.lists(st.integers(0, 999), min_size=0, max_size=16, unique=True).map(sorted))
    segments = []
    for seq, (first, last) in enumerate(zip(bounds[::2], bounds[1::2], strict=False), 1):
        if draw(st.booleans()):
            last = first  # a segment of one row
        segments.append(segment(seq, first, last, draw(st.integers(1, last - first + 1))))
    new = draw(st.sets(st.integers(0, 1_050), max_size=60))
    cap = draw(st.integers(1, 120))
    return draw(st.permutations(segments)), np.array(sorted(new), dtype=np.int64), cap


def applied(segments: Sequence[FileInfo], new: np.ndarray, homes: Sequence[Home]) -> list[tuple[int, int]]:
    """The ranges of the period's files once ``homes`` are written."""
    ranges = {info.name: (info.first, info.last) for info in segments}
    for home in homes:
        lo, hi = int(new[home.start]), int(new[home.stop - 1])
        if home.segment is None:
            ranges[FileName(PERIOD, -home.start - 1, -home.start - 1)] = (lo, hi)
        else:
            first, last = ranges[home.segment.name]
            ranges[home.segment.name] = (min(first, lo), max(last, hi))
    return sorted(ranges.values())


@settings(max_examples=500, deadline=None)
@given(periods())
def test_every_time_gets_one_home_and_ranges_stay_disjoint(case: tuple[list[FileInfo], np.ndarray, int]) -> None:
    segments, new, cap = case
    homes = plan_homes(segments, new, cap)
    # The homes' slices tile [0, len): each new time has exactly one home, in order.
    starts, stops = [h.start for h in homes], [h.stop for h in homes]
    assert starts == [0, *stops[:-1]][: len(homes)] and (stops[-1] if homes else 0) == new.size
    assert all(h.start < h.stop for h in homes)
    # A segment is rewritten once per seal at most.
    named = [h.segment.name for h in homes if h.segment is not None]
    assert len(named) == len(set(named))
    ordered = sorted(segments, key=lambda s: s.first)
    for home in homes:
        chunk = new[home.start : home.stop]
        if home.segment is None:
            # A new segment never straddles an existing one: no segment's range meets [first, last].
            assert not any(s.first <= chunk[-1] and chunk[0] <= s.last for s in ordered)
            continue
        info = home.segment
        assert chunk[0] >= info.first  # never grows backwards
        beyond = chunk[chunk > info.last]
        if beyond.size:
            # It grows into the gap after it only, and only while it stays within the cap.
            assert info.rows + chunk.size <= cap
            after = [s.first for s in ordered if s.first > info.last]
            assert not after or beyond[-1] < min(after)
    # A time inside a segment's range goes to that segment.
    for index, t in enumerate(new.tolist()):
        holder = [s for s in ordered if s.first <= t <= s.last]
        home = next(h for h in homes if h.start <= index < h.stop)
        if holder:
            assert home.segment == holder[0]
    # Once written, the period's files still have disjoint ranges.
    ranges = applied(segments, new, homes)
    assert all(a[1] < b[0] for a, b in itertools.pairwise(ranges))


@settings(max_examples=200, deadline=None)
@given(periods())
def test_times_all_inside_segments_never_make_a_new_one(case: tuple[list[FileInfo], np.ndarray, int]) -> None:
    segments, _, cap = case
    inside = sorted({t for s in segments for t in range(s.first, s.last + 1, 3)})
    homes = plan_homes(segments, np.array(inside, dtype=np.int64), cap)
    assert all(h.segment is not None for h in homes)  # corrections replace rows, whatever the cap


def test_nothing_new_has_no_home() -> None:
    assert plan_homes([segment(1, 0, 9)], np.empty(0, np.int64), 10) == []


def test_a_live_tail_grows_to_the_cap_then_a_new_segment_starts() -> None:
    cap = segment_rows("1m", 600)
    segments: list[FileInfo] = []
    next_seq, start = 1, 0
    sizes = []
    for _ in range(300):  # 300 seals of 10 minutes
        batch = np.arange(start, start + 10, dtype=np.int64)
        start += 10
        (home,) = plan_homes(segments, batch, cap)
        if home.segment is None:
            segments.append(segment(next_seq, int(batch[0]), int(batch[-1])))
            next_seq += 1
        else:
            grown = segment(home.segment.name.lo, home.segment.first, int(batch[-1]), home.segment.rows + 10)
            segments[segments.index(home.segment)] = grown
        sizes.append(segments[-1].rows)
    # 144 seals fill a segment to exactly the cap (1,440 rows); the 145th starts the next one.
    assert [s.rows for s in segments] == [1_440, 1_440, 120]
    assert sizes[143] == 1_440 and sizes[144] == 10
    assert [s.first for s in segments] == [0, 1_440, 2_880]


def test_a_backfill_fills_a_hole_after_a_segment_while_it_has_room() -> None:
    a, b = segment(1, 0, 99), segment(2, 200, 299)
    hole = np.arange(100, 200, dtype=np.int64)
    assert plan_homes([b, a], hole, cap=200) == [Home(a, 0, 100)]
    # No room: a segment of its own, between the two.
    assert plan_homes([a, b], hole, cap=199) == [Home(None, 0, 100)]
    # Corrections of a's rows still go to a; the hole's times start a new segment.
    both = np.arange(50, 200, dtype=np.int64)
    assert plan_homes([a, b], both, cap=199) == [Home(a, 0, 50), Home(None, 50, 150)]


def test_times_before_the_first_segment_make_their_own() -> None:
    first = segment(1, 100, 199)
    assert plan_homes([first], times(0, 5, 9), cap=10_000) == [Home(None, 0, 3)]
    # Before it, inside it and after it: three homes, the first new, the others the segment.
    assert plan_homes([first], times(0, 150, 250), cap=10_000) == [Home(None, 0, 1), Home(first, 1, 3)]
    assert plan_homes([], times(3, 4), cap=1) == [Home(None, 0, 2)]


def test_a_gap_time_counts_against_the_cap_with_the_corrections() -> None:
    full = segment(1, 0, 9)
    # 10 rows and cap 11: one more row fits, but a correction and a new row count as two.
    assert plan_homes([full], times(10), cap=11) == [Home(full, 0, 1)]
    assert plan_homes([full], times(5, 10), cap=11) == [Home(full, 0, 1), Home(None, 1, 2)]


@pytest.mark.parametrize(
    ("interval", "seal_seconds", "rows"),
    [
        ("1m", 600, SEGMENT_MIN_ROWS),  # a day of minutes
        ("1s", 600, 14_400),  # 24 seals' worth: 4 hours
        ("1s", 60, SEGMENT_MIN_ROWS),
        ("1s", 1e9, MAX_ROWS_PER_FILE),  # never above a period file's maximum
        ("1m", 6_000, 2_400),
        ("1M", 600, SEGMENT_MIN_ROWS),
        ("1w", 0.001, SEGMENT_MIN_ROWS),
    ],
)
def test_segment_rows(interval: str, seal_seconds: float, rows: int) -> None:
    assert segment_rows(interval, seal_seconds) == rows


@pytest.mark.parametrize("interval", list(INTERVALS))
def test_every_interval_has_a_cap_within_bounds(interval: str) -> None:
    assert SEGMENT_MIN_ROWS <= segment_rows(interval, 600) <= MAX_ROWS_PER_FILE
