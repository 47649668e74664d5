"""Exact candles as Arrow tables (decimal128) and back as the seed's float64 DataFrame, digit for digit."""

from __future__ import annotations

import csv
import re
from decimal import Decimal

import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st
from realdata_support import REALDATA, csv_files, market_of, needs_realdata, rest_series

from trio_klines.core.parse import Candle, parse_frame, parse_rest_klines, parse_rest_row
from trio_klines.core.validity import EXACT_FRACTION_DIGITS, EXACT_WHOLE_DIGITS, candle_problem
from trio_klines.store.tables import (
    EXACT_SCHEMA,
    EXACT_TYPE,
    SCHEMA,
    candles_to_table,
    decimal_column,
    exact_to_float,
    schema_for,
    table_to_dataframe,
)

pytestmark = pytest.mark.timeout(120)

T = 1_767_225_600_000
VALUES = ("open", "high", "low", "close", "volume", "quote_volume", "taker_buy_base_asset_volume",
          "taker_buy_quote_asset_volume")  # fmt: skip
texts = st.builds(lambda w, f: f"{w}.{f}" if f else str(w), st.integers(0, 10**15), st.text("0123456789", max_size=10))


def exact_candle(i: int, values: list[str]) -> Candle:
    o, h, lo, c, v, q, bv, bq = values
    return Candle("spot", "BTCUSDT", "1m", T + i * 60_000, o, h, lo, c, v, q, i, bv, bq)


def float_twin(candle: Candle) -> Candle:
    return Candle(*(float(getattr(candle, f)) if f in VALUES else getattr(candle, f)  # type: ignore[arg-type]
                    for f in Candle.__struct_fields__))  # fmt: skip


@given(st.lists(st.lists(texts, min_size=8, max_size=8), max_size=20))
def test_exact_tables_hold_the_decimals_and_read_back_as_the_float_parse_would(rows: list[list[str]]) -> None:
    candles = [exact_candle(i, values) for i, values in enumerate(rows)]
    table = candles_to_table(candles, numbers="exact")
    assert table.schema == EXACT_SCHEMA
    for name in VALUES:
        assert table.column(name).to_pylist() == [Decimal(getattr(c, name)) for c in candles]
    # Back to float64 through the text: each value the float nearest its decimal, as float(text) is.
    floats = exact_to_float(table)
    assert floats.schema == SCHEMA
    assert floats.equals(candles_to_table([float_twin(c) for c in candles]))


def test_the_series_columns_come_first_with_series() -> None:
    table = candles_to_table([exact_candle(0, ["2", "3", "1", "2", "5", "10", "1", "2"])], with_series=True,
                             numbers="exact")  # fmt: skip
    assert table.schema.names[:3] == ["market", "symbol", "interval"]
    assert table.column("symbol").to_pylist() == ["BTCUSDT"] and table.column("trade_num").to_pylist() == [0]


def test_what_is_not_an_exact_decimal_is_refused_by_name() -> None:
    good = ["2", "3", "1", "2", "5", "10", "1", "2"]
    from_floats = r"open 2\.0 is not a decimal string \(exact values come from the exact parsers\)"
    with pytest.raises(ValueError, match=from_floats):
        candles_to_table([float_twin(exact_candle(0, good))], numbers="exact")
    with pytest.raises(ValueError, match="high '1e3' is not a decimal string"):
        candles_to_table([exact_candle(0, ["2", "1e3", *good[2:]])], numbers="exact")
    with pytest.raises(ValueError, match=r"volume '5\.1{13}' does not fit decimal128\(30, 12\) \(18 digits"):
        candles_to_table([exact_candle(0, [*good[:4], "5." + "1" * 13, *good[5:]])], numbers="exact")
    with pytest.raises(ValueError, match=r"volume '9{19}' does not fit decimal128"):
        candles_to_table([exact_candle(0, [*good[:4], "9" * 19, *good[5:]])], numbers="exact")
    fits = candles_to_table([exact_candle(0, [*good[:4], "9" * 18 + "." + "9" * 12, *good[5:]])], numbers="exact")
    assert str(fits.column("volume")[0].as_py()) == "9" * 18 + "." + "9" * 12
    # Zeros that change nothing fit, however many.
    padded = candles_to_table([exact_candle(0, [*good[:4], "0" * 30 + "5." + "0" * 30, *good[5:]])], numbers="exact")
    assert str(padded.column("volume")[0].as_py()) == "5.000000000000"
    with pytest.raises(ValueError, match="numbers must be one of float, exact"):
        schema_for("decimal")
    assert candles_to_table([], numbers="exact").num_rows == 0


def test_the_seed_dataframe_of_an_exact_table_is_float64_or_decimal_on_request() -> None:
    candles = [exact_candle(0, ["148205200.10773722", "148205200.10773722", "1", "2", "5", "148205200.10773722",
                                "1", "2"])]  # fmt: skip
    table = candles_to_table(candles, numbers="exact")
    plain = table_to_dataframe(table, "1m")
    assert plain["open"].dtype == "float64" and plain["open"].iloc[0] == float("148205200.10773722")
    exact = table_to_dataframe(table, "1m", exact=True)
    assert exact["quote_volume"].dtype == pd.ArrowDtype(EXACT_TYPE)
    assert exact["quote_volume"].iloc[0] == Decimal("148205200.10773722")
    assert list(exact.index) == list(plain.index)


@needs_realdata
def test_every_real_capture_through_an_exact_table_and_back() -> None:
    exact: list[Candle] = []
    floats: list[Candle] = []
    for path in sorted(REALDATA.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if '"x":true' in line:
                exact.append(parse_frame(line, market_of(path.name), exact=True))  # type: ignore[arg-type]
                floats.append(parse_frame(line, market_of(path.name)))  # type: ignore[arg-type]
    for path in sorted(p for p in REALDATA.glob("*_rest_*.json") if "error" not in p.name):
        body = path.read_bytes()
        exact += parse_rest_klines(body, *rest_series(path), exact=True)
        floats += parse_rest_klines(body, *rest_series(path))
    for path in csv_files():
        symbol, interval = ("ADABTC" if "adabtc" in path.name else "BTCUSDT"), ("1h" if "_1h_" in path.name else "1m")
        with path.open(newline="", encoding="utf-8") as rows:
            for row in csv.reader(rows):
                row_ = [int(row[0]), *row[1:6], int(row[6]), row[7], int(row[8]), *row[9:]]
                exact.append(parse_rest_row(row_, market_of(path.name), symbol, interval, exact=True))
                floats.append(parse_rest_row(row_, market_of(path.name), symbol, interval))
    assert len(exact) > 18_000
    table = candles_to_table(exact, with_series=True, numbers="exact")
    for name in VALUES:
        assert table.column(name).to_pylist() == [Decimal(getattr(c, name)) for c in exact]  # digit for digit
    assert exact_to_float(table).equals(candles_to_table(floats, with_series=True))
    direct = table.column("quote_volume").cast(pa.float64()).to_pylist()
    # Why exact_to_float goes through the text: Arrow's direct cast lands an ulp off for some of them.
    assert sum(d != c.quote_volume for d, c in zip(direct, floats, strict=True)) > 0


@given(st.lists(st.text("0123456789.e-+ ", max_size=34), min_size=1, max_size=20))
def test_a_column_is_taken_exactly_when_each_value_is_a_decimal_that_fits(texts: list[str]) -> None:
    def fits(text: str) -> bool:
        if set(text) - set("0123456789.") or text.count(".") > 1 or not any(ch.isdigit() for ch in text):
            return False  # not digits with at most one dot ("5." and ".5" are decimals: exact all the same)
        whole, _, fraction = text.partition(".")
        return len(whole.lstrip("0")) <= EXACT_WHOLE_DIGITS and len(fraction.rstrip("0")) <= EXACT_FRACTION_DIGITS

    strings = pa.array(texts, pa.string())
    if all(fits(t) for t in texts):
        assert decimal_column("open", strings).to_pylist() == [Decimal(t) for t in texts]
        assert all(candle_problem(exact_candle(0, [t] * 8), exact=True) is None for t in texts)
    else:
        bad = next(t for t in texts if not fits(t))
        with pytest.raises(ValueError, match=re.escape(f"open {bad!r} ")):
            decimal_column("open", strings)
        assert candle_problem(exact_candle(0, [bad] * 8), exact=True) is not None
