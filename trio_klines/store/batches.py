"""A batch of candles cut into what the store writes: one sorted, unique table per series and period.

Pure: no I/O. Everything is checked before anything is cut, so a refused batch writes nothing.
pyarrow's errors pass through, except those that a candle's own values cause (refused, as
:class:`~trio_klines.errors.InvalidCandles`); the store maps the rest to its own errors.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Final, NamedTuple

import numpy as np
import pyarrow as pa

from ..core.markets import INTERVALS, Series, floor_open_time, is_open_time, series
from ..core.parse import Candle
from ..errors import ConfigError, InvalidCandles
from .compaction import open_times, sort_unique
from .layout import MAX_OPEN_TIME, period_of, periods_of
from .tables import candles_to_table

__all__ = ["Part", "split_batch"]

# What pyarrow raises for a Python value that does not fit its column (a wrong type, an int beyond int64).
_UNCONVERTIBLE: Final = (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError)


class Part(NamedTuple):
    """The rows of one series opening in one period, sorted by open time, unique."""

    series: Series
    period: str
    table: pa.Table
    first: int
    last: int


def split_batch(candles: Sequence[Candle]) -> list[Part]:
    """``candles`` (any series, any order) as parts; of a repeated open time the last candle is kept.

    Raises :class:`InvalidCandles` for an invalid or non-normalized series name, an open time off the
    interval's grid or outside 1970–9999, or a value that does not fit its column.
    """
    if not candles:
        return []
    # One table for the whole batch and one gather per series: per-series tables built candle by candle
    # cost a fixed overhead each, which dominated batches of many series.
    names = {(c.market, c.symbol, c.interval) for c in candles}
    codes = {name: code for code, name in enumerate(names)}
    table = _table_of(candles)
    times = open_times(table)
    if len(codes) == 1:  # the common case: no gathering
        rows_of: dict[int, np.ndarray | None] = {0: None}
    else:
        code_array = np.array([codes[(c.market, c.symbol, c.interval)] for c in candles], dtype=np.int64)
        order = np.argsort(code_array, kind="stable")  # stable: batch order within a series
        bounds = np.concatenate(([0], np.cumsum(np.bincount(code_array, minlength=len(codes)))))
        rows_of = {code: order[bounds[code] : bounds[code + 1]] for code in range(len(codes))}
    groups = []
    for name, code in sorted(codes.items()):
        key = _checked_series(*name)
        rows = rows_of[code]
        group_times = times if rows is None else times[rows]
        _check_open_times(key, group_times)
        # take() copies: a part must not keep the whole batch's buffers alive (the store caches parts).
        groups.append((key, table if rows is None else table.take(rows), group_times))
    parts = []
    for key, group, group_times in groups:
        unique, times_sorted = _sort_unique(group, group_times)
        first, last = int(times_sorted[0]), int(times_sorted[-1])
        if period_of(key.interval, first) == period_of(key.interval, last):
            parts.append(Part(key, period_of(key.interval, first), unique, first, last))
            continue
        period_keys, period_names = periods_of(key.interval, times_sorted)
        bounds = [0, *(np.flatnonzero(np.diff(period_keys)) + 1).tolist(), times_sorted.size]
        for period, (lo, hi) in zip(period_names, itertools.pairwise(bounds), strict=True):
            parts.append(Part(key, period, unique.slice(lo, hi - lo), int(times_sorted[lo]), int(times_sorted[hi - 1])))
    return parts


def _table_of(candles: Sequence[Candle]) -> pa.Table:
    """:func:`~trio_klines.store.tables.candles_to_table`, refusing a batch that holds a candle it cannot convert.

    Raises :class:`InvalidCandles` if a candle fails on its own (the same batch would fail again, so it
    must not be retried); a failure that no single candle causes is re-raised as it is.
    """
    try:
        return _converted(candles)
    except _UNCONVERTIBLE as exc:
        bad = _unconvertible(candles)
        if bad is None:
            raise
        raise InvalidCandles(f"refusing the batch: {bad} does not fit the store's columns ({exc})") from exc


def _converted(candles: Sequence[Candle]) -> pa.Table:
    table = candles_to_table(candles)
    # pyarrow converts None to a null without a word; the file writer would refuse it much later.
    if any(column.null_count for column in table.columns):
        raise pa.ArrowInvalid("a value is missing (None)")
    return table


def _unconvertible(candles: Sequence[Candle]) -> Candle | None:
    """A candle that fails to convert on its own, or ``None``: a bisection, about twice a batch's work."""

    def fails(lo: int, hi: int) -> bool:
        try:
            _converted(candles[lo:hi])
        except _UNCONVERTIBLE:
            return True
        return False

    lo, hi = 0, len(candles)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fails(lo, mid):
            hi = mid
        elif fails(mid, hi):
            lo = mid
        else:
            return None
    return candles[lo] if hi > lo and fails(lo, hi) else None


def _sort_unique(table: pa.Table, times: np.ndarray) -> tuple[pa.Table, np.ndarray]:
    """:func:`~trio_klines.store.compaction.sort_unique` with the open times already at hand, and sorted ones back."""
    if times.size < 2 or bool(np.all(times[1:] > times[:-1])):
        return table, times
    unique = sort_unique(table)
    return unique, open_times(unique)


def _checked_series(market: str, symbol: str, interval: str) -> Series:
    try:
        key = series(market, symbol, interval)
    except ConfigError as exc:
        raise InvalidCandles(f"refusing the batch: {exc}") from exc
    if key.symbol != symbol:
        raise InvalidCandles(f"refusing the batch: symbol {symbol!r} is not upper-case")
    return key


def _check_open_times(key: Series, times: np.ndarray) -> None:
    bad = (times < 0) | (times >= MAX_OPEN_TIME)
    length = INTERVALS[key.interval]
    if length is None:  # 1M: calendar months, a few candles at most
        aligned = [0 <= t < MAX_OPEN_TIME and is_open_time(key.interval, int(t)) for t in times]
        bad |= ~np.array(aligned, dtype=bool)
    else:
        bad |= (times - floor_open_time(key.interval, 0)) % length != 0
    if bool(bad.any()):
        example = int(times[np.flatnonzero(bad)[0]])
        count = int(bad.sum())
        raise InvalidCandles(f"refusing the batch: {count} candle(s) of {key} open off the grid, e.g. at {example}")
