"""Landing files: one table per append, every series of it; read back with every check; split by series."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_klines.core.markets import Series
from trio_klines.core.parse import Candle
from trio_klines.errors import ConfigError, CorruptFile, RefusedCandles
from trio_klines.store.compaction import open_times
from trio_klines.store.landing import (
    LANDING_DIR,
    LANDING_SCHEMA,
    landing_name,
    landing_table,
    list_landing,
    read_landing,
    serialize_landing,
    split_by_series,
)
from trio_klines.store.tables import SCHEMA, SERIES_COLUMNS, candles_to_table

JAN_2024 = 1_704_067_200_000
MINUTE = 60_000
SERIES = [Series("spot", "BTCUSDT", "1m"), Series("spot", "ETHUSDT", "1m"), Series("usdt_futures", "BTCUSDT", "1h")]


def candle(key: Series, open_time: int, value: float = 1.0) -> Candle:
    return Candle(key.market, key.symbol, key.interval, open_time, value, value, value, value, 1.0, 1.0, 1, 0.5, 0.5)


def step(key: Series) -> int:
    return 3_600_000 if key.interval == "1h" else MINUTE


def rows(table: pa.Table) -> list[tuple[str, str, str, int, float]]:
    """(market, symbol, interval, open time, open) of each row of a landing table."""
    names = [table.column(c).to_pylist() for c in SERIES_COLUMNS]
    return list(zip(*names, open_times(table).tolist(), table.column("open").to_pylist(), strict=True))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 30), st.integers(0, 1_000)), max_size=60))
def test_a_landing_table_keeps_the_last_of_each_open_time_sorted_by_series(
    drawn: list[tuple[int, int, int]],
) -> None:
    candles = [candle(SERIES[s], JAN_2024 + i * step(SERIES[s]), float(v)) for s, i, v in drawn]
    landed = landing_table(candles)
    assert landed.table.schema == LANDING_SCHEMA
    expected = {(c.market, c.symbol, c.interval, c.open_time): c.open for c in candles}  # the last one wins
    got = rows(landed.table)
    assert {row[:4]: row[4] for row in got} == expected and len(got) == len(expected)
    # Each series' rows are together (series in order of appearance) and sorted by open time.
    series_order = list(dict.fromkeys((c.market, c.symbol, c.interval) for c in candles))
    assert [row[:3] for row in got] == sorted((row[:3] for row in got), key=series_order.index)
    assert all(a[3] < b[3] for a, b in itertools.pairwise(got) if a[:3] == b[:3])
    newest: dict[Series, int] = {}
    for c in candles:
        key = Series(c.market, c.symbol, c.interval)
        newest[key] = max(newest.get(key, -1), c.open_time)
    assert landed.newest == newest


def test_an_empty_batch_lands_nothing() -> None:
    landed = landing_table([])
    assert landed.table.num_rows == 0 and landed.newest == {}
    assert split_by_series([landed.table]) == {}


def test_every_invalid_candle_is_named_and_nothing_is_built() -> None:
    good = [candle(SERIES[0], JAN_2024 + i * MINUTE) for i in range(3)]
    off_grid = candle(SERIES[0], JAN_2024 + 1)
    lower = candle(Series("spot", "btcusdt", "1m"), JAN_2024)
    infinite = candle(SERIES[1], JAN_2024, math.inf)
    with pytest.raises(RefusedCandles, match=r"refusing 3 candle\(s\).*not a 1m boundary") as caught:
        landing_table([good[0], off_grid, good[1], lower, infinite, good[2]])
    assert [r.candle for r in caught.value.refused] == [off_grid, lower, infinite]
    assert all(r.reason for r in caught.value.refused)


def write(path: Path, table: pa.Table) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(serialize_landing(table).to_pybytes())
    return path


def mixed() -> pa.Table:
    batch = [candle(key, JAN_2024 + i * step(key), float(i)) for key in reversed(SERIES) for i in range(20)]
    return landing_table(batch).table


def test_a_landing_file_reads_back_as_written(tmp_path: Path) -> None:
    table = mixed()
    path = write(tmp_path / landing_name(7), table)
    back = read_landing(path)
    assert back.schema == LANDING_SCHEMA
    assert rows(back) == rows(table)
    assert back.select(list(SCHEMA.names)).equals(table.select(list(SCHEMA.names)))
    meta = pq.read_metadata(path)
    assert meta.row_group(0).column(3).compression == "ZSTD"


def test_a_missing_landing_file_is_not_corrupt(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_landing(tmp_path / landing_name(1))


def test_a_truncated_landing_file_is_corrupt(tmp_path: Path) -> None:
    path = write(tmp_path / landing_name(1), mixed())
    data = path.read_bytes()
    for length in (0, 4, len(data) // 2, len(data) - 1):
        path.write_bytes(data[:length])
        with pytest.raises(CorruptFile) as caught:
            read_landing(path)
        assert caught.value.path == path


def test_a_flipped_bit_never_gives_a_wrong_row(tmp_path: Path) -> None:
    table = mixed()
    path = write(tmp_path / landing_name(1), table)
    original = path.read_bytes()
    outcomes = {"same": 0, "corrupt": 0}
    for offset in range(0, len(original), 7):
        damaged = bytearray(original)
        damaged[offset] ^= 1 << (offset % 8)
        path.write_bytes(bytes(damaged))
        try:
            back = read_landing(path)
        except CorruptFile:
            outcomes["corrupt"] += 1
            continue
        assert rows(back) == rows(table), f"byte {offset} changed a row silently"
        outcomes["same"] += 1
    assert outcomes["corrupt"] > outcomes["same"]


def test_a_column_name_garbled_into_invalid_utf8_is_corrupt(tmp_path: Path) -> None:
    path = write(tmp_path / landing_name(1), mixed())
    data = bytearray(path.read_bytes())
    at = data.index(b"symbol")  # the schema comes first in the footer
    data[at] ^= 0x80  # "s" becomes a lone continuation byte
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptFile):
        read_landing(path)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda t: t.drop_columns(["symbol"]),
        lambda t: t.select(list(SCHEMA.names)),  # a period file's columns, not a landing file's
        lambda t: t.set_column(1, "symbol", pc.cast(t.column("symbol"), pa.string())).rename_columns(
            ["market", "ticker", *t.column_names[2:]]
        ),
        lambda t: t.set_column(4, "open", pa.array(["x"] * t.num_rows)),
    ],
    ids=["no symbol", "no series at all", "a foreign column", "a string for a price"],
)
def test_a_landing_file_of_another_schema_is_corrupt(tmp_path: Path, tamper: object) -> None:
    path = tmp_path / landing_name(1)
    pq.write_table(tamper(mixed()), path)  # type: ignore[operator]
    with pytest.raises(CorruptFile, match="schema"):
        read_landing(path)


def shifted(table: pa.Table, by: int) -> pa.Table:
    times = pc.add(table.column("candle_begin_time").cast(pa.int64()), by).cast(SCHEMA.field(0).type)
    return table.set_column(3, SCHEMA.field(0), times)


@pytest.mark.parametrize(
    ("by", "reason"),
    [(1, "off the 1m grid"), (-JAN_2024 - MINUTE, "out of range"), (300_000 * 365 * 86_400_000, "out of range")],
)
def test_a_landing_file_with_impossible_open_times_is_corrupt(tmp_path: Path, by: int, reason: str) -> None:
    path = write(tmp_path / landing_name(1), shifted(landing_table([candle(SERIES[0], JAN_2024)]).table, by))
    with pytest.raises(CorruptFile, match=reason):
        read_landing(path)


def test_a_landing_file_of_a_series_the_store_never_writes_is_corrupt(tmp_path: Path) -> None:
    table = landing_table([candle(SERIES[0], JAN_2024)]).table
    foreign = pa.DictionaryArray.from_arrays(pa.array([0], pa.int32()), pa.array(["../etc"]))
    path = write(tmp_path / landing_name(1), table.set_column(1, LANDING_SCHEMA.field(1), foreign))
    with pytest.raises(CorruptFile, match="symbol"):
        read_landing(path)
    with pytest.raises(ConfigError):
        split_by_series([table.set_column(1, LANDING_SCHEMA.field(1), foreign)])


def test_split_by_series_lets_the_later_table_win() -> None:
    btc, eth, hourly = SERIES
    older = landing_table([candle(btc, JAN_2024 + i * MINUTE, 1.0) for i in range(5)] + [candle(eth, JAN_2024)])
    newer = landing_table([candle(hourly, JAN_2024, 7.0), candle(btc, JAN_2024 + 2 * MINUTE, 2.0)])
    newest = landing_table([candle(btc, JAN_2024 + 9 * MINUTE, 3.0), candle(btc, JAN_2024 + 2 * MINUTE, 4.0)])
    groups = split_by_series([older.table, newer.table, landing_table([]).table, newest.table])
    assert list(groups) == sorted(groups) == [btc, eth, hourly]
    assert all(t.schema == SCHEMA for t in groups.values())
    assert open_times(groups[btc]).tolist() == [JAN_2024 + i * MINUTE for i in (0, 1, 2, 3, 4, 9)]
    assert groups[btc].column("open").to_pylist() == [1.0, 1.0, 4.0, 1.0, 1.0, 3.0]
    assert groups[eth].num_rows == 1 and groups[hourly].column("open").to_pylist() == [7.0]
    # Other order, other winner: the order of the tables decides, not their contents.
    swapped = split_by_series([newest.table, newer.table])
    assert swapped[btc].column("open").to_pylist() == [2.0, 3.0]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 9)), max_size=12), max_size=5))
def test_split_by_series_equals_replaying_the_writes(batches: list[list[tuple[int, int]]]) -> None:
    expected: dict[Series, dict[int, float]] = {}
    tables = []
    for number, batch in enumerate(batches):
        candles = [candle(SERIES[s], JAN_2024 + i * step(SERIES[s]), number * 100.0 + j)
                   for j, (s, i) in enumerate(batch)]  # fmt: skip
        for c in candles:
            expected.setdefault(Series(c.market, c.symbol, c.interval), {})[c.open_time] = c.open
        tables.append(landing_table(candles).table)
    groups = split_by_series(tables)
    got = {
        key: dict(zip(open_times(t).tolist(), t.column("open").to_pylist(), strict=True)) for key, t in groups.items()
    }
    assert got == {key: dict(sorted(v.items())) for key, v in expected.items()}
    assert all(list(got[key]) == sorted(got[key]) for key in got)


def test_list_landing_lists_ours_oldest_first(tmp_path: Path) -> None:
    assert list_landing(tmp_path) == []  # no landing directory yet
    directory = tmp_path / LANDING_DIR
    directory.mkdir()
    for name in (landing_name(10), landing_name(2), landing_name(123_456_789_012)):
        (directory / name).write_bytes(b"")
    foreign = [
        f".{landing_name(11)}.tmp",  # being written
        "notes.txt",
        "12.parquet",
        f"0{landing_name(13)}",  # thirteen digits
        landing_name(14) + ".quarantined",
    ]
    for name in foreign:
        (directory / name).write_bytes(b"")
    assert list_landing(tmp_path) == [(2, directory / landing_name(2)), (10, directory / landing_name(10)),
                                      (123_456_789_012, directory / landing_name(123_456_789_012))]  # fmt: skip
    assert landing_name(2) == "000000000002.parquet"


def test_candles_to_table_is_the_landing_tables_value_part() -> None:
    candles = [candle(SERIES[0], JAN_2024 + i * MINUTE, float(i)) for i in range(3)]
    landed = landing_table(candles).table
    assert landed.select(list(SCHEMA.names)).cast(SCHEMA).equals(candles_to_table(candles))
