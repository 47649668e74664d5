"""A series' rows cut into what the store writes: one table per period. Pure: no I/O.

And the one refusal of invalid candles: every candle is checked first against the one definition of a
valid candle (:func:`~trio_klines.core.validity.candle_problem`, the parser's too); if any is not valid,
the batch is refused with each such candle named (:class:`RefusedCandles`) and nothing is written, so
the caller can append the rest (the writer does).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import pyarrow as pa

from ..core.markets import Series
from ..core.validity import Refusal, describe
from ..errors import RefusedCandles
from .compaction import open_times
from .layout import period_of, periods_of

__all__ = ["Part", "period_parts", "refused_candles"]


def refused_candles(refused: Sequence[Refusal]) -> RefusedCandles:
    """The error refusing a batch for its invalid candles, naming them all and describing the first."""
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
    times: np.ndarray

    @property
    def first(self) -> int:
        return int(self.times[0])

    @property
    def last(self) -> int:
        return int(self.times[-1])


def period_parts(key: Series, table: pa.Table) -> list[Part]:
    """The rows of ``key`` (sorted by open time, unique, not empty) cut by period."""
    times = open_times(table)
    first, last = int(times[0]), int(times[-1])
    if period_of(key.interval, first) == period_of(key.interval, last):
        return [Part(key, period_of(key.interval, first), table, times)]
    period_keys, period_names = periods_of(key.interval, times)
    bounds = [0, *(np.flatnonzero(np.diff(period_keys)) + 1).tolist(), times.size]
    return [
        Part(key, period, table.slice(lo, hi - lo), times[lo:hi])
        for period, (lo, hi) in zip(period_names, itertools.pairwise(bounds), strict=True)
    ]
