"""Batches of candles as Arrow tables and as the seed-shaped DataFrame."""

from __future__ import annotations

import io

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_klines.core.markets import INTERVALS, floor_open_time, next_open_time
from trio_klines.core.parse import Candle
from trio_klines.store.tables import COLUMNS, SCHEMA, candles_to_dataframe, candles_to_table, table_to_dataframe

values = st.floats(min_value=0, max_value=1e12, allow_nan=False)


@st.composite
def series_candles(draw: st.DrawFn) -> list[Candle]:
    interval = draw(st.sampled_from(list(INTERVALS)))
    t = floor_open_time(interval, draw(st.integers(1_500_000_000_000, 4_000_000_000_000)))
    out = []
    for _ in range(draw(st.integers(0, 30))):
        o, h, lo, c, v, q, bv, bq = (draw(values) for _ in range(8))
        out.append(Candle("spot", "BTCUSDT", interval, t, o, h, lo, c, v, q, draw(st.integers(0, 2**62)), bv, bq))
        t = next_open_time(interval, t)
    return out


def test_schema_is_the_design() -> None:
    assert SCHEMA.names == list(COLUMNS)
    assert SCHEMA.field("candle_begin_time").type == pa.timestamp("ms", tz="UTC")
    assert SCHEMA.field("trade_num").type == pa.int64()
    assert {SCHEMA.field(n).type for n in COLUMNS if n not in ("candle_begin_time", "trade_num")} == {pa.float64()}


@settings(max_examples=60, deadline=None)
@given(series_candles())
def test_table_and_dataframe_hold_the_candles(candles: list[Candle]) -> None:
    table = candles_to_table(candles)
    assert table.schema == SCHEMA
    # Survives a Parquet round trip unchanged.
    sink = io.BytesIO()
    pq.write_table(table, sink)
    assert pq.read_table(io.BytesIO(sink.getvalue())).equals(table)
    if not candles:
        return
    frame = candles_to_dataframe(candles)
    assert list(frame.columns) == list(COLUMNS)
    assert frame.index.name == "candle_end_time"
    assert str(frame.index.tz) == "UTC"
    interval = candles[0].interval
    assert [int(ts.value // 10**6) for ts in frame.index] == [next_open_time(interval, c.open_time) for c in candles]
    assert [int(ts.value // 10**6) for ts in frame["candle_begin_time"]] == [c.open_time for c in candles]
    assert frame["trade_num"].tolist() == [c.trade_num for c in candles]
    assert frame["close"].tolist() == [c.close for c in candles]
    assert frame["trade_num"].dtype == "int64" and frame["open"].dtype == "float64"


def test_month_end_index_is_calendar_aware() -> None:
    jan = 1704067200000  # 2024-01-01
    feb = next_open_time("1M", jan)
    frame = candles_to_dataframe([Candle("coin_futures", "BTCUSD_PERP", "1M", t, 1, 1, 1, 1, 1, 1, 1, 1, 1)
                                  for t in (jan, feb)])  # fmt: skip
    assert list(frame.index) == [pd.Timestamp("2024-02-01", tz="UTC"), pd.Timestamp("2024-03-01", tz="UTC")]


def test_series_columns_for_mixed_batches() -> None:
    a = Candle("spot", "BTCUSDT", "1m", 60_000, 1, 1, 1, 1, 1, 1, 1, 1, 1)
    b = Candle("usdt_futures", "ETHUSDT", "1h", 3_600_000, 1, 1, 1, 1, 1, 1, 1, 1, 1)
    table = candles_to_table([a, b], with_series=True)
    assert table.column_names[:3] == ["market", "symbol", "interval"]
    assert table.column("symbol").to_pylist() == ["BTCUSDT", "ETHUSDT"]
    with pytest.raises(ValueError, match="several intervals"):
        candles_to_dataframe([a, b])


def test_table_to_dataframe_refuses_an_unknown_interval() -> None:
    with pytest.raises(ValueError, match="unknown interval"):
        table_to_dataframe(candles_to_table([]), "2d")
