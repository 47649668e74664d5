"""The vectorised archive reader against the reference (``parse_archive_csv``), and ``Store.append_table``."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from realdata_support import csv_files, market_of, needs_realdata

from trio_klines.core.archive import parse_archive_csv
from trio_klines.core.markets import Series
from trio_klines.errors import InvalidCandles, MalformedMessage
from trio_klines.store.archive_csv import read_archive_csv, read_archive_zip, select_wanted, table_problem
from trio_klines.store.dataset import Store, load
from trio_klines.store.tables import candles_to_table
from trio_klines.testing.strategies import wire_klines

pytestmark = [pytest.mark.timeout(120), needs_realdata]
MIN = 60_000


def series_of(path: Path) -> tuple[str, str, str]:
    symbol = "ADABTC" if "adabtc" in path.name else "BTCUSDT"
    return market_of(path.name), symbol, "1h" if "_1h_" in path.name else "1m"


def read_all(data: bytes | io.BytesIO, market: str, symbol: str, interval: str, block_size: int = 1 << 20) -> pa.Table:
    return pa.concat_tables(list(read_archive_csv(data, market, symbol, interval, block_size=block_size)))


@pytest.mark.parametrize("path", csv_files(), ids=lambda p: p.name)
def test_every_real_archive_file_reads_to_the_reference_values(path: Path) -> None:
    data = path.read_bytes()
    market, symbol, interval = series_of(path)
    reference = candles_to_table(list(parse_archive_csv(data, market, symbol, interval)))
    assert read_all(data, market, symbol, interval).equals(reference)
    assert read_all(data, market, symbol, interval, block_size=4096).equals(reference)  # many blocks


def csv_line(kline: object, micros: bool) -> str:
    row = kline.rest_row()  # type: ignore[attr-defined]
    if micros:
        row[0], row[6] = row[0] * 1000, row[6] * 1000 + 999
    return ",".join(str(x) for x in row)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(["spot", "usdt_futures", "coin_futures"]).flatmap(
        lambda market: st.lists(wire_klines(markets=[market]), min_size=1, max_size=20)
    ),
    st.booleans(),
    st.booleans(),
)
def test_generated_files_read_as_the_reference_reads_them(cases: list, header: bool, micros: bool) -> None:
    market, interval, symbol = cases[0].market, cases[0].kline.interval, cases[0].kline.symbol
    if interval == "1M":
        return  # the archive is not used for 1M
    klines = [c.kline for c in cases if c.kline.interval == interval]  # a CSV's rows name no series
    micros = micros and market == "spot"
    lines = (["open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,"
              "taker_buy_quote_volume,ignore"] if header else []) + [csv_line(k, micros) for k in klines]  # fmt: skip
    data = ("\n".join(lines) + "\n").encode()
    reference = candles_to_table(list(parse_archive_csv(data, market, symbol, interval)))
    assert read_all(data, market, symbol, interval).equals(reference)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("1704067200000,2,3,1,2,5,1704067259999,10,7,1,2,0", None),
        ("1704067200000,2,3,1,2,5,1704067319999,10,7,1,2,0", "close time"),  # closes after its minute
        ("1704067230000,2,3,1,2,5,1704067259999,10,7,1,2,0", "boundary"),  # off the grid
        ("1704067200000,4,3,1,2,5,1704067259999,10,7,1,2,0", "prices out of order"),
        ("1704067200000,2,3,1,2,5,1704067259999,10,7,6,2,0", "taker-buy"),
        ("1704067200000,2,3,1,2,5,1704067259999,10,-7,1,2,0", "trade count"),
        ("1704067200000,2,nan,1,2,5,1704067259999,10,7,1,2,0", "finite"),
        ("1704067200000,2,inf,1,2,5,1704067259999,10,7,1,2,0", "finite"),
        ("1704067200000,2,3,1,2,,1704067259999,10,7,1,2,0", "empty"),
        ("1704067200000,2,3,1,2,x,1704067259999,10,7,1,2,0", "line"),
        ("1704067200000,2,3,1,2,5,1704067259999,10,7,1,2", "line"),  # a column short
        ("1704067200000500,2,3,1,2,5,1704067259999999,10,7,1,2,0", "whole millisecond"),
    ],
)
def test_a_bad_row_is_refused_naming_its_line(line: str, reason: str | None) -> None:
    good = "1704067140000,2,3,1,2,5,1704067199999,10,7,1,2,0"
    data = f"{good}\n{line}\n".encode()
    if reason is None:
        assert read_all(data, "spot", "BTCUSDT", "1m").num_rows == 2
        return
    with pytest.raises(MalformedMessage, match=reason):
        read_all(data, "spot", "BTCUSDT", "1m")
    with pytest.raises(MalformedMessage):  # the reference refuses it too
        list(parse_archive_csv(data, "spot", "BTCUSDT", "1m"))


def test_a_bad_row_names_its_line() -> None:
    rows = [f"{1704067200000 + i * MIN},2,3,1,2,5,{1704067259999 + i * MIN},10,7,1,2,0" for i in range(5)]
    rows[3] = rows[3].replace(",3,1,", ",0.5,1,")
    with pytest.raises(MalformedMessage, match="line 4"):
        read_all("\n".join(rows).encode(), "spot", "BTCUSDT", "1m")


def zipped(name: str, data: bytes, method: int = zipfile.ZIP_DEFLATED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", method) as z:
        z.writestr(name, data)
    return out.getvalue()


def test_a_zip_reads_whole_or_not_at_all() -> None:
    path = next(p for p in csv_files() if p.name.endswith("2024-01-01.csv"))
    data, name = path.read_bytes(), "BTCUSDT-1m-2024-01-01.csv"
    tables = read_archive_zip(io.BytesIO(zipped(name, data)), name, "spot", "BTCUSDT", "1m")
    assert sum(t.num_rows for t in tables) == 1440
    stored = bytearray(zipped(name, data, zipfile.ZIP_STORED))
    at = stored.index(b"42283.58")
    stored[at] = ord("3")  # still a valid CSV, but not what the zip's CRC-32 says
    broken = {
        "truncated": zipped(name, data)[:5000],
        "bad CRC": bytes(stored),
        "garbage": b"not a zip at all",
        "other member": zipped("ETHUSDT-1m-2024-01-01.csv", data),
    }
    for what, body in broken.items():
        with pytest.raises(MalformedMessage):
            read_archive_zip(io.BytesIO(body), name, "spot", "BTCUSDT", "1m")
        assert what


def test_select_wanted_keeps_the_ranges_and_names_the_missing_runs() -> None:
    path = next(p for p in csv_files() if p.name.endswith("2020-06-28.csv"))  # no rows 02:00-05:29
    tables = list(read_archive_csv(path.read_bytes(), "spot", "BTCUSDT", "1m"))
    day = 1593302400000
    table, absent = select_wanted("1m", tables, ((day, day + 1440 * MIN),))
    assert table.num_rows == 1230 and absent == [(day + 120 * MIN, day + 330 * MIN)]
    wanted = ((day + 60 * MIN, day + 180 * MIN), (day + 1400 * MIN, day + 1440 * MIN))
    table, absent = select_wanted("1m", tables, wanted)
    assert table.num_rows == 60 + 40 and absent == [(day + 120 * MIN, day + 180 * MIN)]
    table, absent = select_wanted("1m", [], ((day, day + 10 * MIN),))
    assert table.num_rows == 0 and absent == [(day, day + 10 * MIN)]


def test_append_table_stores_what_append_stores(tmp_path: Path) -> None:
    path = next(p for p in csv_files() if p.name.endswith("2023-03-24.csv"))  # a halt, an early close
    data = path.read_bytes()
    key = Series("spot", "BTCUSDT", "1m")
    with Store(tmp_path / "a") as a, Store(tmp_path / "b") as b:
        for table in read_archive_csv(data, *key[:2], "1m", block_size=8192):
            a.append_table(key, table)
        b.append(list(parse_archive_csv(data, "spot", "BTCUSDT", "1m")))
    assert load(tmp_path / "a", *key).equals(load(tmp_path / "b", *key))


def test_append_table_refuses_bad_rows_and_names(tmp_path: Path) -> None:
    path = next(p for p in csv_files() if p.name.endswith("2024-01-01.csv"))
    table = read_all(path.read_bytes(), "spot", "BTCUSDT", "1m")
    with Store(tmp_path) as store:
        with pytest.raises(InvalidCandles, match="symbol"):
            store.append_table(Series("spot", "btc/usdt", "1m"), table)
        with pytest.raises(InvalidCandles, match="boundary"):
            store.append_table(Series("spot", "BTCUSDT", "1h"), table)
        high = table.column("high").to_numpy().copy()
        high[7] = 0.0
        bad = table.set_column(2, table.schema.field("high"), pa.array(high))
        with pytest.raises(InvalidCandles, match="prices out of order"):
            store.append_table(Series("spot", "BTCUSDT", "1m"), bad)
        with pytest.raises(InvalidCandles, match="schema"):
            store.append_table(Series("spot", "BTCUSDT", "1m"), table.set_column(2, "high", pa.array(high)))
        assert store.series() == []
    assert table_problem("1m", table) is None
