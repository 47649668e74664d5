"""A batch of candles cut into what the store writes: one sorted, unique table per series and period.

Pure: no I/O. Everything is checked before anything is cut, so a refused batch writes nothing.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import pyarrow as pa

from .compaction import open_times, sort_unique
from .errors import ConfigError, InvalidCandles
from .layout import MAX_OPEN_TIME, period_of, periods_of
from .markets import INTERVALS, Series, floor_open_time, is_open_time, series
from .parse import Candle
from .tables import candles_to_table

__all__ = ["Part", "split_batch"]


class Part(NamedTuple):
    """The rows of one series opening in one period, sorted by open time, unique."""

    series: Series
    period: str
    table: pa.Table
    first: int
    last: int


def split_batch(candles: Sequence[Candle]) -> list[Part]:
    """``candles`` (any series, any order) as parts; of a repeated open time the last candle is kept.

    Raises :class:`InvalidCandles` for an invalid or non-normalized series name, or an open time off the
    interval's grid or outside 1970–9999.
    """
    if not candles:
        return []
    names = {(c.market, c.symbol, c.interval) for c in candles}
    groups: dict[tuple[str, str, str], Sequence[Candle]]
    if len(names) == 1:  # the common case: no copying
        groups = {names.pop(): candles}
    else:
        lists: dict[tuple[str, str, str], list[Candle]] = {name: [] for name in sorted(names)}
        for c in candles:  # in batch order, so that of a repeated open time the last is kept
            lists[(c.market, c.symbol, c.interval)].append(c)
        groups = dict(lists)
    tables = []
    for (market, symbol, interval), group in groups.items():
        key = _checked_series(market, symbol, interval)
        table = candles_to_table(group)
        _check_open_times(key, open_times(table))
        tables.append((key, table))
    parts = []
    for key, table in tables:
        unique = sort_unique(table)
        times = open_times(unique)
        first, last = int(times[0]), int(times[-1])
        if period_of(key.interval, first) == period_of(key.interval, last):
            parts.append(Part(key, period_of(key.interval, first), unique, first, last))
            continue
        period_keys, period_names = periods_of(key.interval, times)
        bounds = [0, *(np.flatnonzero(np.diff(period_keys)) + 1).tolist(), times.size]
        for period, (lo, hi) in zip(period_names, itertools.pairwise(bounds), strict=True):
            parts.append(Part(key, period, unique.slice(lo, hi - lo), int(times[lo]), int(times[hi - 1])))
    return parts


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
