"""The store's pure core: partition and file names, periods, legacy overlaps, row merging, batch cutting, gaps."""

from __future__ import annotations

import itertools

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_klines.core.gaps import find_gaps
from trio_klines.core.markets import (
    INTERVALS,
    Series,
    count_open_times,
    floor_open_time,
    iter_open_times,
    next_open_time,
)
from trio_klines.core.parse import Candle
from trio_klines.errors import ConfigError
from trio_klines.store.batches import Part, period_parts
from trio_klines.store.compaction import (
    CompactionSummary,
    FileInfo,
    first_overlapping,
    merge_tables,
    open_times,
    redundant_files,
    sort_unique,
)
from trio_klines.store.coverage import gaps_between
from trio_klines.store.dataset import InvalidCandles
from trio_klines.store.landing import landing_table, split_by_series
from trio_klines.store.layout import (
    MAX_ROWS_PER_FILE,
    PERIOD_UNITS,
    FileName,
    is_temp_name,
    parse_series_dir,
    period_bounds,
    period_of,
    periods_of,
    series_dir,
    temp_name,
)
from trio_klines.store.tables import candles_to_table

JAN_2024 = 1_704_067_200_000
MINUTE = 60_000


def candle(open_time: int, value: float = 1.0, *, symbol: str = "BTCUSDT", interval: str = "1m") -> Candle:
    return Candle("spot", symbol, interval, open_time, value, value, value, value, 1.0, 1.0, int(value), 0.5, 0.5)


# --- layout -------------------------------------------------------------------------------------


def test_period_rule_is_pinned() -> None:
    assert PERIOD_UNITS == {
        "1s": "day",
        "1m": "month",
        "3m": "month",
        "5m": "month",
        "15m": "year",
        "30m": "year",
        "1h": "year",
        "2h": "year",
        "4h": "year",
        "6h": "year",
        "8h": "year",
        "12h": "year",
        "1d": "year",
        "3d": "year",
        "1w": "year",
        "1M": "year",
    }


@pytest.mark.parametrize("interval", list(INTERVALS))
def test_no_period_holds_more_than_the_maximum(interval: str) -> None:
    # The longest period of each unit (a leap year, a 31-day month) stays within the limit.
    longest = {"day": "2024-02-29", "month": "2024-01", "year": "2024"}[PERIOD_UNITS[interval]]
    start, end = period_bounds(interval, longest)
    assert count_open_times(interval, start, end) <= MAX_ROWS_PER_FILE


@settings(max_examples=200, derandomize=True)
@given(st.sampled_from(list(INTERVALS)), st.integers(0, 253_402_300_799_999))
def test_period_of_contains_the_open_time(interval: str, t: int) -> None:
    t = floor_open_time(interval, t) if t >= 7 * 86_400_000 else t
    name = period_of(interval, t)
    start, end = period_bounds(interval, name)
    assert start <= t < end
    _, names = periods_of(interval, np.array([t], dtype=np.int64))
    assert names == [name]


def test_periods_of_groups_in_order() -> None:
    times = np.array([JAN_2024 - MINUTE, JAN_2024, JAN_2024 + 40 * 86_400_000], dtype=np.int64)
    keys, names = periods_of("1m", times)
    assert names == ["2023-12", "2024-01", "2024-02"]
    assert list(np.unique(keys)) == sorted(set(keys.tolist()))


def test_period_bounds_rejects_a_foreign_name() -> None:
    with pytest.raises(ValueError, match="not a month"):
        period_bounds("1m", "2024")


def test_file_names_round_trip_and_sort_like_numbers() -> None:
    name = FileName("2024-01", 3, 57)
    assert str(name) == "2024-01_000000000003-000000000057.parquet"
    assert FileName.parse(str(name)) == name
    assert FileName.parse("2024-01_000000000009-000000000003.parquet") is None  # lo > hi
    for foreign in ("part-0.parquet", "2024-01_1-2.parquet", "2024-01_000000000001-000000000001.parquet.tmp"):
        assert FileName.parse(foreign) is None
    assert FileName("2024", 1, 9).contains(FileName("2024", 3, 3))
    assert not FileName("2024", 1, 9).contains(FileName("2025", 3, 3))
    assert not FileName("2024", 1, 9).contains(FileName("2024", 1, 9))


def test_temp_names_are_hidden_from_readers() -> None:
    name = temp_name("2024_000000000001-000000000001.parquet")
    assert name.startswith(".") and is_temp_name(name) and not name.endswith(".parquet")
    assert not is_temp_name("2024_000000000001-000000000001.parquet")


def test_minute_and_month_never_share_a_directory_whatever_the_case() -> None:
    minute = series_dir(Series("spot", "BTCUSDT", "1m"))
    month = series_dir(Series("spot", "BTCUSDT", "1M"))
    assert month == ("market=spot", "interval=1%4D", "symbol=BTCUSDT")
    assert minute[1].lower() != month[1].lower()
    assert parse_series_dir(*month) == Series("spot", "BTCUSDT", "1M")
    assert parse_series_dir(*minute) == Series("spot", "BTCUSDT", "1m")


@pytest.mark.parametrize(
    "parts",
    [
        ("market=spot", "interval=1M", "symbol=BTCUSDT"),  # month written unencoded: not ours
        ("market=spot", "interval=1m", "symbol=btcusdt"),
        ("market=spot", "interval=1m", "symbol=.."),
        ("market=moon", "interval=1m", "symbol=BTCUSDT"),
        ("market=spot", "interval=7m", "symbol=BTCUSDT"),
        ("spot", "interval=1m", "symbol=BTCUSDT"),
    ],
)
def test_foreign_directories_are_not_series(parts: tuple[str, str, str]) -> None:
    assert parse_series_dir(*parts) is None


@pytest.mark.parametrize(
    "bad",
    [
        Series("moon", "BTCUSDT", "1m"),
        Series("spot", "../etc", "1m"),
        Series("spot", "btcusdt", "1m"),
        Series("usdt_futures", "BTCUSDT", "1s"),
    ],
)
def test_series_dir_validates_before_building_a_path(bad: Series) -> None:
    with pytest.raises(ConfigError):
        series_dir(bad)


# --- the older layout's overlapping files ------------------------------------------------------


def info(lo: int, first: int, last: int) -> FileInfo:
    return FileInfo(FileName("2024-01", lo, lo), last - first + 1, first, last)


def test_first_overlapping_finds_the_oldest_file_that_meets_another() -> None:
    assert first_overlapping([]) is None
    assert first_overlapping([info(1, 0, 9)]) is None
    assert first_overlapping([info(1, 0, 9), info(2, 10, 19), info(3, 30, 39)]) is None  # segments: disjoint
    assert first_overlapping([info(1, 0, 9), info(2, 10, 19), info(3, 15, 25)]) == 1
    assert first_overlapping([info(2, 20, 29), info(1, 0, 9), info(3, 5, 5)]) == 1  # by open times, any order
    assert first_overlapping([info(1, 0, 100), info(2, 40, 50), info(3, 60, 70)]) == 0  # inside a wide one
    assert first_overlapping([info(1, 0, 9), info(2, 9, 19)]) == 0  # sharing one open time is meeting


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.lists(st.tuples(st.integers(0, 60), st.integers(0, 10)), max_size=8))
def test_first_overlapping_agrees_with_pairwise_checks(ranges: list[tuple[int, int]]) -> None:
    files = [info(i, first, first + length) for i, (first, length) in enumerate(ranges)]
    meeting = [
        i
        for i, a in enumerate(files)
        if any(j != i and a.first <= b.last and b.first <= a.last for j, b in enumerate(files))
    ]
    assert first_overlapping(files) == (min(meeting) if meeting else None)


def test_redundant_files_are_those_inside_a_merged_range() -> None:
    names = [FileName("2024", 1, 8), FileName("2024", 3, 3), FileName("2024", 8, 8), FileName("2024", 9, 9)]
    names += [FileName("2025", 3, 3)]
    assert sorted(redundant_files(names)) == [FileName("2024", 3, 3), FileName("2024", 8, 8)]


def test_compaction_summary_says_what_was_done() -> None:
    assert str(CompactionSummary(3, 0, 0, 0, 120, 0, files=4)) == "3 series: sealed 120 rows into 4 file(s)"
    text = str(CompactionSummary(2, 1, 5, 1, 0, 1, ("x: disk full",)))
    assert "merged 1 period(s) of the older layout, 5 file(s) into 1" in text
    assert "1 corrupt file(s) moved to quarantine" in text and "1 error(s): x: disk full" in text


# --- row merging --------------------------------------------------------------------------------


def table(times: list[int], value: float) -> pa.Table:
    return candles_to_table([candle(t, value) for t in times])


def test_merge_keeps_the_latest_write_of_each_open_time() -> None:
    old = table([0, MINUTE, 2 * MINUTE], 1.0)
    new = table([MINUTE, 3 * MINUTE], 2.0)
    newest = table([2 * MINUTE], 3.0)
    merged = merge_tables([old, new, newest])
    assert open_times(merged).tolist() == [0, MINUTE, 2 * MINUTE, 3 * MINUTE]
    assert merged.column("open").to_pylist() == [1.0, 2.0, 3.0, 2.0]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.integers(0, 40), max_size=12), min_size=2, max_size=4), st.booleans())
def test_merge_equals_a_last_write_wins_dictionary(writes: list[list[int]], in_order: bool) -> None:
    if in_order:  # the usual seal: sorted unique writes, each after the one before (the fast path)
        start, ordered = 0, []
        for times in writes:
            ordered.append([start + t for t in sorted(set(times))])
            start += 41
        writes = ordered
    tables = [table([t * MINUTE for t in times], float(i)) for i, times in enumerate(writes)]
    expected: dict[int, float] = {}
    for i, times in enumerate(writes):
        for t in times:
            expected[t * MINUTE] = float(i)
    merged = merge_tables(tables)
    assert open_times(merged).tolist() == sorted(expected)
    assert merged.column("open").to_pylist() == [expected[t] for t in sorted(expected)]


def test_sort_unique_keeps_the_last_in_table_order() -> None:
    batch = candles_to_table([candle(MINUTE, 1.0), candle(0, 2.0), candle(MINUTE, 3.0)])
    result = sort_unique(batch)
    assert open_times(result).tolist() == [0, MINUTE]
    assert result.column("open").to_pylist() == [2.0, 3.0]


# --- batches ------------------------------------------------------------------------------------


def parts_of(batch: list[Candle]) -> list[Part]:
    return [
        part for key, rows in split_by_series([landing_table(batch).table]).items() for part in period_parts(key, rows)
    ]


def test_a_batch_is_cut_by_series_and_period() -> None:
    dec = JAN_2024 - MINUTE
    batch = [
        candle(JAN_2024, 1.0),
        candle(dec, 2.0),
        candle(JAN_2024, 5.0, symbol="ETHUSDT"),
        candle(JAN_2024, 3.0),  # repeats the first: the later one wins
    ]
    got = {(p.series.symbol, p.period): (p.first, p.last, p.table.column("open").to_pylist()) for p in parts_of(batch)}
    assert got == {
        ("BTCUSDT", "2023-12"): (dec, dec, [2.0]),
        ("BTCUSDT", "2024-01"): (JAN_2024, JAN_2024, [3.0]),
        ("ETHUSDT", "2024-01"): (JAN_2024, JAN_2024, [5.0]),
    }


@pytest.mark.parametrize(
    "bad",
    [
        candle(JAN_2024 + 1),  # off the minute grid
        candle(JAN_2024, symbol="btcusdt"),
        candle(JAN_2024, symbol="BTC/USDT"),
        candle(JAN_2024, interval="7m"),
        candle(-MINUTE),
        candle(JAN_2024 + 86_400_000, interval="1M"),  # a month candle opens on the 1st
        candle(253_402_300_800_000 + 86_400_000 * 31, interval="1M"),
    ],
)
def test_a_bad_candle_refuses_the_whole_batch(bad: Candle) -> None:
    with pytest.raises(InvalidCandles):
        landing_table([candle(JAN_2024), bad])


def test_week_and_month_candles_are_on_their_grids() -> None:
    monday = floor_open_time("1w", JAN_2024 + 5 * 86_400_000)
    parts = parts_of([candle(monday, interval="1w"), candle(JAN_2024, interval="1M")])
    assert {(p.series.interval, p.period) for p in parts} == {("1w", "2024"), ("1M", "2024")}


# --- gaps ---------------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None, derandomize=True)
@given(st.sampled_from(["1m", "1M", "1w", "1s"]), st.sets(st.integers(0, 60), max_size=40))
def test_vectorised_gaps_equal_the_reference(interval: str, indices: set[int]) -> None:
    key = Series("spot", "BTCUSDT", interval)
    grid = list(itertools.islice(iter_open_times(interval, JAN_2024, JAN_2024 + 70 * 31 * 86_400_000), 61))
    times = np.array(sorted(grid[i] for i in indices), dtype=np.int64)
    expected = find_gaps(key, times.tolist()) if times.size else []
    assert gaps_between(key, times) == expected
    for gap in gaps_between(key, times):
        assert gap.start == next_open_time(interval, int(times[times < gap.start][-1]))
