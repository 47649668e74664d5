"""Batches of candles as Arrow tables (the store's schema) and as the seed-shaped pandas DataFrame.

The seed recorder's DataFrame, which users' research code already expects, is indexed by
``candle_end_time`` (begin + interval, UTC) with the columns of :data:`COLUMNS` in that order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import pandas as pd
import pyarrow as pa

from ..core.markets import INTERVALS, interval_ms
from ..core.parse import Candle

__all__ = [
    "COLUMNS",
    "SCHEMA",
    "SERIES_COLUMNS",
    "candles_to_dataframe",
    "candles_to_table",
    "table_to_dataframe",
]

#: Value columns, in the seed's order.
COLUMNS: Final = (
    "candle_begin_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "quote_volume",
    "trade_num",
    "taker_buy_base_asset_volume",
    "taker_buy_quote_asset_volume",
)
#: Columns naming the series; in the store they are Hive partition keys, not stored in the files.
SERIES_COLUMNS: Final = ("market", "symbol", "interval")

_FLOATS: Final = ("open", "high", "low", "close", "volume", "quote_volume")
_TAKER: Final = ("taker_buy_base_asset_volume", "taker_buy_quote_asset_volume")

#: The store's file schema.
SCHEMA: Final = pa.schema(
    [pa.field("candle_begin_time", pa.timestamp("ms", tz="UTC"), nullable=False)]
    + [pa.field(name, pa.float64(), nullable=False) for name in _FLOATS]
    + [pa.field("trade_num", pa.int64(), nullable=False)]
    + [pa.field(name, pa.float64(), nullable=False) for name in _TAKER]
)
_SERIES_FIELDS: Final = [pa.field(name, pa.string(), nullable=False) for name in SERIES_COLUMNS]


def candles_to_table(candles: Sequence[Candle], *, with_series: bool = False) -> pa.Table:
    """``candles`` as a table in :data:`SCHEMA`, in the given order.

    With ``with_series`` the table starts with ``market``, ``symbol`` and ``interval`` columns, for
    batches that mix series.
    """
    arrays: list[pa.Array] = []
    fields: list[pa.Field] = []
    if with_series:
        arrays += [
            pa.array([c.market for c in candles], pa.string()),
            pa.array([c.symbol for c in candles], pa.string()),
            pa.array([c.interval for c in candles], pa.string()),
        ]
        fields += _SERIES_FIELDS
    arrays += [
        pa.array([c.open_time for c in candles], pa.int64()).cast(SCHEMA.field(0).type),
        pa.array([c.open for c in candles], pa.float64()),
        pa.array([c.high for c in candles], pa.float64()),
        pa.array([c.low for c in candles], pa.float64()),
        pa.array([c.close for c in candles], pa.float64()),
        pa.array([c.volume for c in candles], pa.float64()),
        pa.array([c.quote_volume for c in candles], pa.float64()),
        pa.array([c.trade_num for c in candles], pa.int64()),
        pa.array([c.taker_buy_base_asset_volume for c in candles], pa.float64()),
        pa.array([c.taker_buy_quote_asset_volume for c in candles], pa.float64()),
    ]
    fields += list(SCHEMA)
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def table_to_dataframe(table: pa.Table, interval: str) -> pd.DataFrame:
    """A table in :data:`SCHEMA` (extra columns ignored) as the seed-shaped DataFrame of ``interval``.

    The index is ``candle_end_time`` = begin + interval (a calendar month for ``1M``), UTC.
    """
    frame = table.select(list(COLUMNS)).to_pandas()
    begin = frame["candle_begin_time"]
    if begin.dt.tz is None:  # pragma: no cover - SCHEMA always carries UTC
        begin = begin.dt.tz_localize("UTC")
    if interval == "1M":
        end = begin + pd.DateOffset(months=1)
    elif interval in INTERVALS:
        end = begin + pd.Timedelta(milliseconds=interval_ms(interval))
    else:
        raise ValueError(f"unknown interval {interval!r}")
    frame.index = pd.DatetimeIndex(end, name="candle_end_time")
    return frame


def candles_to_dataframe(candles: Sequence[Candle]) -> pd.DataFrame:
    """Candles of one series as the seed-shaped DataFrame (see :func:`table_to_dataframe`).

    Raises ``ValueError`` when the candles mix intervals, since the index depends on the interval.
    """
    intervals = {c.interval for c in candles}
    if len(intervals) > 1:
        raise ValueError(f"candles of several intervals {sorted(intervals)}: convert one series at a time")
    return table_to_dataframe(candles_to_table(candles), intervals.pop() if intervals else "1m")
