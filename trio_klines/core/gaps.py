"""Continuity of a series: which candles are new, which are repeats, where the record has holes.

Pure: no I/O, no trio, no clock. The writer feeds every received candle through a
:class:`ContinuityTracker` (new, late, repeat or revised; a jump forward is a :class:`Gap` to backfill).
:func:`find_gaps` is the plain definition of a hole in stored open times: the store's coverage computes
the same thing vectorised (``trio_klines.store.coverage.gaps_between``) and is tested against it.
:class:`RangeSet` holds ranges of open times: what a backfill claimed, what the exchange never had.
"""

from __future__ import annotations

import enum
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Final

from .markets import Series, count_open_times, next_open_time, open_time_index
from .timefmt import iso_range

__all__ = ["ContinuityTracker", "Gap", "RangeSet", "Verdict", "find_gaps", "missing_count"]

#: How many open times before the newest are remembered per series, to recognise repeats that arrive late.
DEFAULT_MEMORY: Final = 4096
#: How many candles per series keep a fingerprint of their values (by open time modulo this), so that a
#: repeat with the same values is dropped and one with other values is written (the later write wins).
#: Repeats come right after the original (a resent frame, a backfill page overlapping the live head).
VALUES_MEMORY: Final = 8
# The fingerprint of a candle whose values are not known (seeded from the store, observed without one):
# a repeat of it is taken for a true repeat, as before fingerprints. A real hash equal to it is a 2**-64 chance.
_UNKNOWN: Final = -(2**63)


@dataclass(frozen=True, slots=True)
class Gap:
    """Candles of ``series`` opening in ``[start, end)`` are missing (times in ms)."""

    series: Series
    start: int
    end: int

    @property
    def candles(self) -> int:
        return count_open_times(self.series.interval, self.start, self.end)

    def __str__(self) -> str:
        """``spot BTCUSDT-1m: 3 candle(s) missing from 2026-11-30T10:15:00Z to 2026-11-30T10:18:00Z``
        (the end is the open time of the first candle present again)."""
        return f"{self.series}: {self.candles} candle(s) missing {iso_range(self.start, self.end)}"


class Verdict(enum.Enum):
    """What the tracker makes of a candle."""

    NEW = "new"  # next in line, or after a gap (then a Gap is reported too)
    LATE = "late"  # older than the newest seen but never seen before: fills (part of) a gap
    DUPLICATE = "duplicate"  # seen before with the same values: drop it
    REVISED = "revised"  # seen before, with other values or too long ago to compare: write it, the later wins


@dataclass(slots=True)
class _SeriesState:
    last: int  # the newest open time
    index: int  # its number on the grid (markets.open_time_index)
    seen: int  # bit k set: the candle k places before ``last`` has been seen
    # Fingerprint of the candle last observed at grid number i, at i % VALUES_MEMORY. A slot may hold an
    # older or newer candle's: a fingerprint covers the open time too, so it then differs (revised, written).
    prints: array[int]


class ContinuityTracker:
    """Remembers, per series, the newest open time, which of the ``memory`` before it were seen, and a
    fingerprint of the values of the last :data:`VALUES_MEMORY` candles.

    ``seed(series, last_open_time)`` starts a series from what the store already holds, so a restart
    reports the hole between the stored record and the first live candle. What a series costs is one
    ``memory``-bit integer (512 bytes by default) and 8 fingerprints (144 bytes), however long the
    recorder runs: a soak of 1000 series grew by 120 bytes a candle while this was a dictionary of recent
    open times.
    """

    def __init__(self, memory: int = DEFAULT_MEMORY) -> None:
        if memory < 1:
            raise ValueError("memory must be at least 1")
        self._memory = memory
        self._mask = (1 << memory) - 1
        self._series: dict[Series, _SeriesState] = {}

    def seed(self, series: Series, last_open_time: int) -> None:
        """Declare that everything of ``series`` up to ``last_open_time`` is already recorded."""
        state = self._series.get(series)
        index = open_time_index(series.interval, last_open_time)
        if state is None:
            self._series[series] = _SeriesState(last_open_time, index, 1, _new_prints())
        elif last_open_time > state.last:
            self._advance(state, last_open_time, index)
            state.prints[index % VALUES_MEMORY] = _UNKNOWN

    def last_open_time(self, series: Series) -> int | None:
        state = self._series.get(series)
        return None if state is None else state.last

    def observe(self, series: Series, open_time: int, fingerprint: int | None = None) -> tuple[Verdict, Gap | None]:
        """Judge the candle of ``series`` opening at ``open_time`` and remember it.

        ``fingerprint`` stands for the candle's values (the writer passes ``hash(candle)``, which covers
        the open time too): a repeat with the fingerprint last seen at that open time is a
        :attr:`~Verdict.DUPLICATE`, one with another, or older than :data:`VALUES_MEMORY` candles,
        :attr:`~Verdict.REVISED`. Without one, every repeat is a duplicate.
        """
        index = open_time_index(series.interval, open_time)
        state = self._series.get(series)
        known = _UNKNOWN if fingerprint is None else fingerprint
        if state is None:
            self._series[series] = state = _SeriesState(open_time, index, 1, _new_prints())
            state.prints[index % VALUES_MEMORY] = known
            return Verdict.NEW, None
        slot = index % VALUES_MEMORY
        back = state.index - index
        if back >= 0:
            if back < self._memory:
                bit = 1 << back
                if state.seen & bit:
                    last = state.prints[slot]
                    if fingerprint is None or last in (known, _UNKNOWN):
                        return Verdict.DUPLICATE, None
                    state.prints[slot] = known
                    return Verdict.REVISED, None
                state.seen |= bit
            state.prints[slot] = known
            return Verdict.LATE, None  # older than memory: cannot tell, and the store keeps one copy anyway
        expected = next_open_time(series.interval, state.last)
        self._advance(state, open_time, index)
        state.prints[slot] = known
        if open_time > expected:
            return Verdict.NEW, Gap(series, expected, open_time)
        return Verdict.NEW, None

    def _advance(self, state: _SeriesState, open_time: int, index: int) -> None:
        shift = index - state.index
        state.seen = ((state.seen << shift) | 1) & self._mask if shift < self._memory else 1
        state.last, state.index = open_time, index


def _new_prints() -> array[int]:
    return array("q", [_UNKNOWN]) * VALUES_MEMORY


def find_gaps(series: Series, open_times: Iterable[int], start: int | None = None, end: int | None = None) -> list[Gap]:
    """The holes in ``open_times`` (any order, repeats allowed) between ``start`` and ``end``.

    ``start`` defaults to the first open time and ``end`` (exclusive) to just after the last one: a
    series is only judged between what it holds unless told otherwise. Times off the interval's grid
    are the caller's problem; they simply count as present.
    """
    times = sorted(set(open_times))
    if not times and (start is None or end is None):
        return []
    lo = times[0] if start is None else start
    hi = next_open_time(series.interval, times[-1]) if end is None else end
    gaps = []
    expected = lo
    for t in times:
        if t < lo:
            continue
        if t >= hi:
            break
        if t > expected and count_open_times(series.interval, expected, t):
            gaps.append(Gap(series, expected, t))
        expected = max(expected, next_open_time(series.interval, t))
    if expected < hi and count_open_times(series.interval, expected, hi):
        gaps.append(Gap(series, expected, hi))
    return gaps


def missing_count(gaps: Iterable[Gap]) -> int:
    """Total candles missing over ``gaps``."""
    return sum(g.candles for g in gaps)


class RangeSet:
    """A set of half-open ranges ``[start, end)`` of ms, kept merged and sorted."""

    __slots__ = ("_ranges",)

    def __init__(self, ranges: Iterable[tuple[int, int]] = ()) -> None:
        self._ranges: list[tuple[int, int]] = []
        for start, end in ranges:
            self.add(start, end)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(list(self._ranges))

    def __len__(self) -> int:
        return len(self._ranges)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RangeSet) and self._ranges == other._ranges

    def __repr__(self) -> str:
        return f"RangeSet({self._ranges!r})"

    def add(self, start: int, end: int) -> None:
        if start >= end:
            return
        merged: list[tuple[int, int]] = []
        for lo, hi in self._ranges:
            if hi < start or lo > end:
                merged.append((lo, hi))
            else:
                start, end = min(start, lo), max(end, hi)
        merged.append((start, end))
        merged.sort()
        self._ranges = merged

    def remove(self, start: int, end: int) -> None:
        if start >= end:
            return
        out: list[tuple[int, int]] = []
        for lo, hi in self._ranges:
            if hi <= start or lo >= end:
                out.append((lo, hi))
                continue
            if lo < start:
                out.append((lo, start))
            if hi > end:
                out.append((end, hi))
        self._ranges = out

    def missing(self, start: int, end: int) -> list[tuple[int, int]]:
        """The parts of ``[start, end)`` this set does not hold."""
        out: list[tuple[int, int]] = []
        t = start
        for lo, hi in self._ranges:
            if hi <= t:
                continue
            if lo >= end:
                break
            if lo > t:
                out.append((t, lo))
            t = max(t, hi)
        if t < end:
            out.append((t, end))
        return out

    def covers(self, start: int, end: int) -> bool:
        return not self.missing(start, end)
