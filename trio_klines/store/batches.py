"""A batch of candles cut into what the store writes: one sorted, unique table per series and period.

Pure: no I/O. Every candle is checked first against the one definition of a valid candle
(:func:`~trio_klines.core.validity.candle_problem`, the parser's too): if any is not valid, the batch
is refused with each such candle named (:class:`RefusedCandles`) and nothing is cut, so the caller can
append the rest (the writer does). A valid candle always converts, so pyarrow's errors that remain are
not a candle's fault; they pass through, and the store maps them to its own errors.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import pyarrow as pa

from ..core.markets import Series
from ..core.parse import Candle
from ..core.validity import Refusal, candle_problem, describe
from ..errors import RefusedCandles
from .compaction import open_times, sort_unique
from .layout import period_of, periods_of
from .tables import candles_to_table

__all__ = ["Part", "split_batch"]


def _refused(refused: Sequence[Refusal]) -> RefusedCandles:
    first = refused[0]
    return RefusedCandles(
        f"refusing {len(refused)} candle(s) the store cannot hold (a value that does not fit the store's "
        f"columns, a bad name, an open time off the grid); the first: {first.reason}: {describe(first.candle)}",
        refused,
    )


class Part(NamedTuple):
    """The rows of one series opening in one period, sorted by open time, unique."""

    series: Series
    period: str
    table: pa.Table
    first: int
    last: int


def split_batch(candles: Sequence[Candle]) -> list[Part]:
    """``candles`` (any series, any order) as parts; of a repeated open time the last candle is kept.

    Raises :class:`RefusedCandles` (an :class:`InvalidCandles`) naming every candle that is not valid
    (:mod:`trio_klines.core.validity`): an invalid or non-normalized series name, an open time off the
    interval's grid or outside 1970–9999, a value that does not fit its column, prices out of order.
    """
    if not candles:
        return []
    refused = [Refusal(c, problem) for c in candles if (problem := candle_problem(c)) is not None]
    if refused:
        raise _refused(refused)
    # One table for the whole batch and one gather per series: per-series tables built candle by candle
    # cost a fixed overhead each, which dominated batches of many series.
    names = {(c.market, c.symbol, c.interval) for c in candles}
    codes = {name: code for code, name in enumerate(names)}
    table = candles_to_table(candles)
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
        key = Series(*name)
        rows = rows_of[code]
        group_times = times if rows is None else times[rows]
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


def _sort_unique(table: pa.Table, times: np.ndarray) -> tuple[pa.Table, np.ndarray]:
    """:func:`~trio_klines.store.compaction.sort_unique` with the open times already at hand, and sorted ones back."""
    if times.size < 2 or bool(np.all(times[1:] > times[:-1])):
        return table, times
    unique = sort_unique(table)
    return unique, open_times(unique)
