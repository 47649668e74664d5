"""Batches: the store refuses exactly the candles core.validity calls invalid, each by name; a series' rows
are cut by period (batches.period_parts)."""

from __future__ import annotations

import itertools
import math
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trio_klines.core import validity
from trio_klines.core.markets import INTERVALS, MARKETS, Series, floor_open_time, iter_open_times
from trio_klines.core.parse import Candle
from trio_klines.errors import InvalidCandles, RefusedCandles
from trio_klines.store import layout
from trio_klines.store.batches import period_parts, refused_candles
from trio_klines.store.compaction import open_times
from trio_klines.store.landing import landing_table, split_by_series
from trio_klines.store.tables import candles_to_table

MIN = 60_000
JAN_2024 = 1_704_067_200_000


def candle(open_time: int = JAN_2024, **fields: Any) -> Candle:
    plain = Candle("spot", "BTCUSDT", "1m", open_time, 2.0, 3.0, 1.0, 2.0, 5.0, 10.0, 9, 1.0, 2.0)
    return msgspec.structs.replace(plain, **fields)


NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-5, 2**64 + 5),
    st.sampled_from([True, None, "1.5", [1.0], 1e300, 1.0000000000000001e300, -0.0]),
)


@st.composite
def any_candles(draw: st.DrawFn) -> Candle:
    """Candles of anything: valid ones often, every way of being invalid too."""
    market = draw(st.sampled_from([*sorted(MARKETS), "margin"]))
    intervals = MARKETS[market].intervals if market in MARKETS else ("1m",)
    interval = draw(st.sampled_from([*intervals, "7m"]))
    symbol = draw(st.sampled_from(["BTCUSDT", "ETHUSD_PERP", "btcusdt", "BTC/USDT", ""]))
    t = draw(st.integers(-MIN, validity.MAX_OPEN_TIME + 40 * 86_400_000) | st.sampled_from(["0", 1.5]))
    if isinstance(t, int) and interval != "7m" and 0 <= t < validity.MAX_OPEN_TIME and draw(st.booleans()):
        t = floor_open_time(interval, t)
    if draw(st.booleans()):
        values = [draw(NUMBERS) for _ in range(8)]
        count = draw(NUMBERS)
    else:  # a plausible candle
        lo, o, c, h = sorted(draw(st.lists(st.floats(0, 1e6), min_size=4, max_size=4)))
        bv, v = sorted(draw(st.lists(st.floats(0, 1e6), min_size=2, max_size=2)))
        bq, q = sorted(draw(st.lists(st.floats(0, 1e6), min_size=2, max_size=2)))
        values, count = [o, h, lo, c, v, q, bv, bq], draw(st.integers(0, 2**63 - 1))
    o, h, lo, c, v, q, bv, bq = values
    return Candle(market, symbol, interval, t, o, h, lo, c, v, q, count, bv, bq)  # type: ignore[arg-type]


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(any_candles(), min_size=1, max_size=6))
def test_the_store_refuses_exactly_the_invalid_candles(candles: list[Candle]) -> None:
    valid, refused = validity.partition(candles)
    if refused:
        with pytest.raises(RefusedCandles) as caught:
            landing_table(candles)
        assert [r.candle for r in caught.value.refused] == [r.candle for r in refused]
        assert all(r.reason for r in caught.value.refused)
    if valid:  # what is valid always converts and cuts: the store never fails on a candle's own values
        landed = landing_table(valid)  # type: ignore[arg-type]
        unique = {(c.market, c.symbol, c.interval, c.open_time) for c in valid}  # type: ignore[attr-defined]
        assert landed.table.num_rows == len(unique)
        parts = [part for key, table in split_by_series([landed.table]).items() for part in period_parts(key, table)]
        assert sum(len(p.table) for p in parts) == len(unique)
        candles_to_table(valid)  # type: ignore[arg-type]


def test_the_store_names_periods_with_four_digits_up_to_the_last_valid_open_time() -> None:
    # One range of open times (core.validity) for the parser and the store: its last one is in year 9999.
    assert layout.period_of("1m", validity.MAX_OPEN_TIME - 60_000).startswith("9999")


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (candle(trade_num=2**63), "trade count"),
        (candle(open=math.inf), "finite number"),
        (candle(high=math.nan), "finite number"),
        (candle(volume=-1.0), "finite number"),
        (candle(open="2.0"), "not a number"),
        (candle(open=True), "not a number"),
        (candle(open=2**64), "int64"),
        (candle(low=2.5), "prices out of order"),
        (candle(taker_buy_quote_asset_volume=11.0), "taker-buy volumes"),
        (candle(JAN_2024 + 1), "not a 1m boundary"),
        (candle(validity.MAX_OPEN_TIME), "outside 1970-9999"),
        (candle(symbol="btcusdt"), "upper-case"),
        (candle(interval="3d", open_time=1499126400000), "not a 3d boundary"),
    ],
)
def test_each_refused_candle_is_named_with_its_reason_and_the_rest_is_valid(bad: Candle, reason: str) -> None:
    good = [candle(JAN_2024 + i * MIN) for i in range(3)]
    with pytest.raises(InvalidCandles, match=reason) as caught:
        landing_table([good[0], bad, *good[1:]])
    assert isinstance(caught.value, RefusedCandles)
    assert [r.candle for r in caught.value.refused] == [bad]
    assert landing_table(good).table.num_rows == 3


def test_a_value_nested_too_deeply_is_refused_not_a_recursion_error() -> None:
    value: list[Any] = []
    for _ in range(100_000):
        value = [value]
    bad = candle(open=value)
    assert validity.candle_problem(bad) is not None
    with pytest.raises(RefusedCandles, match="nested too deeply"):
        landing_table([bad])
    assert "nested too deeply" in validity.describe(bad)


def test_integers_that_fit_int64_are_valid_values() -> None:
    c = Candle("spot", "BTCUSDT", "1m", JAN_2024, 2, 3, 1, 2, 5, 10, 9, 1, 2)
    assert validity.candle_problem(c) is None
    assert landing_table([c]).table.column("open").to_pylist() == [2.0]


def test_the_refusal_counts_the_candles_and_describes_the_first() -> None:
    first, second = candle(JAN_2024 + 1), candle(symbol="btcusdt")
    error = refused_candles([validity.Refusal(first, "not a 1m boundary"), validity.Refusal(second, "upper-case")])
    assert isinstance(error, InvalidCandles)
    assert str(error).startswith("refusing 2 candle(s)")
    assert "not a 1m boundary" in str(error) and validity.describe(first) in str(error)
    assert [r.candle for r in error.refused] == [first, second]


def test_period_parts_cut_at_period_boundaries() -> None:
    key = Series("spot", "BTCUSDT", "1m")
    feb = 1_706_745_600_000
    table = landing_table([candle(t) for t in (JAN_2024 - MIN, JAN_2024, JAN_2024 + MIN, feb)]).table
    (only,) = split_by_series([table]).values()
    parts = period_parts(key, only)
    assert [(p.period, p.first, p.last, len(p.table)) for p in parts] == [
        ("2023-12", JAN_2024 - MIN, JAN_2024 - MIN, 1),
        ("2024-01", JAN_2024, JAN_2024 + MIN, 2),
        ("2024-02", feb, feb, 1),
    ]
    assert all(p.series == key for p in parts)
    (whole,) = period_parts(key, only.slice(1, 2))
    assert whole.period == "2024-01" and whole.table.num_rows == 2


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(sorted(INTERVALS)), st.integers(0, 4_000_000_000_000), st.sets(st.integers(0, 400), min_size=1))
def test_period_parts_tile_the_rows_in_order(interval: str, start: int, picks: set[int]) -> None:
    market = "spot" if interval in MARKETS["spot"].intervals else "usdt_futures"
    key = Series(market, "BTCUSDT", interval)
    grid = list(
        itertools.islice(iter_open_times(interval, floor_open_time(interval, start), validity.MAX_OPEN_TIME), 401)
    )
    chosen = [grid[i] for i in sorted(picks)]
    table = candles_to_table([candle(t, interval=interval, market=market) for t in chosen])
    parts = period_parts(key, table)
    assert [t for p in parts for t in open_times(p.table).tolist()] == chosen
    assert [p.period for p in parts] == sorted({layout.period_of(interval, t) for t in chosen})
    for part in parts:
        lo, hi = layout.period_bounds(interval, part.period)
        assert lo <= part.first <= part.last < hi
        assert part.times.tolist() == open_times(part.table).tolist()
