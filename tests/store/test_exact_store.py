"""A dataset of exact numbers: decimals stored digit for digit, read back exactly or as the seed's floats,
recorded at the root so that a dataset never mixes float and exact files."""

from __future__ import annotations

import csv
import io
import json
import shutil
from decimal import Decimal
from pathlib import Path

import duckdb
import msgspec
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from realdata_support import REALDATA, csv_files, market_of, needs_realdata, rest_series

from trio_klines.core.decimals import canonical
from trio_klines.core.markets import Series
from trio_klines.core.parse import Candle, parse_frame, parse_rest_klines
from trio_klines.core.validity import candle_problem
from trio_klines.errors import ConfigError, InvalidCandles, RefusedCandles, StoreError
from trio_klines.store.archive_csv import read_archive_csv
from trio_klines.store.dataset import Store, load, read_series, scan
from trio_klines.store.marker import MARKER_NAME, dataset_numbers, read_numbers
from trio_klines.store.tables import EXACT_SCHEMA, EXACT_TYPE, candles_to_table

pytestmark = pytest.mark.timeout(180)

T = 1_767_225_600_000
MINUTE = 60_000
BTC = Series("spot", "BTCUSDT", "1m")
VALUES = ("open", "high", "low", "close", "volume", "quote_volume", "taker_buy_base_asset_volume",
          "taker_buy_quote_asset_volume")  # fmt: skip
GLOB = "market=*/interval=*/symbol=*/*.parquet"


def candle(i: int, values: list[str], key: Series = BTC) -> Candle:
    o, h, lo, c, v, q, bv, bq = values
    return Candle(key.market, key.symbol, key.interval, T + i * MINUTE, o, h, lo, c, v, q, i, bv, bq)


GOOD = candle(0, ["2", "3", "1", "2", "5", "10", "1", "2"])


def as_floats(c: Candle) -> Candle:
    return msgspec.structs.replace(c, **{name: float(getattr(c, name)) for name in VALUES})


def ordered(prices: list[str], volumes: list[str]) -> list[str]:
    """Eight values of a valid candle from four prices and four volumes (sorted into place exactly)."""
    lo, o, c, h = sorted(prices, key=Decimal)
    bv, v = sorted(volumes[:2], key=Decimal)
    bq, q = sorted(volumes[2:], key=Decimal)
    return [o, h, lo, c, v, q, bv, bq]


# Binance's shapes: a whole part up to 12 digits and 0-8 fraction digits, padded with zeros as sent.
binance = st.builds(lambda w, f, pad: f"{w}.{f}".ljust(len(f"{w}.{f}") + pad, "0") if f else str(w),
                    st.integers(0, 10**12), st.text("0123456789", max_size=8), st.integers(0, 8))  # fmt: skip
values8 = st.builds(ordered, st.lists(binance, min_size=4, max_size=4), st.lists(binance, min_size=4, max_size=4))


def load_floats(root: Path, candles: list[Candle]) -> pd.DataFrame:
    """What a float dataset holds of these candles parsed as floats."""
    with Store(root) as store:
        store.append([as_floats(c) for c in candles])
    return load(root, *BTC)


def exact_strings(frame: pd.DataFrame) -> list[list[str]]:
    return [[canonical(format(x, "f")) for x in frame[name]] for name in VALUES]


def sent_strings(candles: list[Candle]) -> list[list[str]]:
    return [[canonical(getattr(c, name)) for c in candles] for name in VALUES]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(values8, min_size=1, max_size=30))
def test_random_binance_decimals_round_trip_exactly(tmp_path_factory: pytest.TempPathFactory,
                                                    rows: list[list[str]]) -> None:  # fmt: skip
    root = tmp_path_factory.mktemp("exact")
    candles = [candle(i, values) for i, values in enumerate(rows)]
    with Store(root, numbers="exact") as store:
        store.append(candles[: len(candles) // 2])
        assert exact_strings(load(root, *BTC, exact=True))[0] == sent_strings(candles[: len(candles) // 2])[0]
        store.append(candles[len(candles) // 2 :])
    frame = load(root, *BTC, exact=True)  # sealed at close: period files now, no landing file
    assert exact_strings(frame) == sent_strings(candles)
    assert frame["open"].dtype == pd.ArrowDtype(EXACT_TYPE)
    floats = load(root, *BTC)  # the seed's float64, each the float nearest its decimal
    assert all(list(floats[name]) == [float(getattr(c, name)) for c in candles] for name in VALUES)
    assert floats.equals(load_floats(tmp_path_factory.mktemp("float"), candles))


def test_a_new_root_records_its_numbers_and_keeps_them(tmp_path: Path) -> None:
    with Store(tmp_path / "f"):
        pass
    assert read_numbers(tmp_path / "f") == "float"  # the default, recorded
    with Store(tmp_path / "e", numbers="exact"):
        pass
    assert json.loads((tmp_path / "e" / MARKER_NAME).read_text()) == {"numbers": "exact"}
    with Store(tmp_path / "e") as store:  # None: whatever the root holds
        assert store.numbers == "exact" and store.schema == EXACT_SCHEMA
    with pytest.raises(ConfigError, match=r"holds exact numbers, not float: a dataset never mixes both"):
        Store(tmp_path / "e", numbers="float")
    with pytest.raises(ConfigError, match=r"holds float numbers, not exact"):
        Store(tmp_path / "f", numbers="exact")
    with pytest.raises(ConfigError, match=r"numbers must be one of float, exact, not 'decimal'"):
        Store(tmp_path / "g", numbers="decimal")
    with Store(tmp_path / "e"):  # a refused opening released the lock
        pass


def test_an_older_root_holds_floats_and_a_lost_marker_is_restored_from_the_files(tmp_path: Path) -> None:
    older, exact = tmp_path / "older", tmp_path / "exact"
    with Store(older) as store:
        store.append([as_floats(GOOD)])
    (older / MARKER_NAME).unlink()  # as an older release left it
    assert dataset_numbers(older) == "float"
    with pytest.raises(ConfigError, match="holds float numbers, not exact"):
        Store(older, numbers="exact")
    assert read_numbers(older) is None  # refused: nothing written
    with Store(older):
        pass
    assert read_numbers(older) == "float"

    with Store(exact, numbers="exact") as store:
        store.append([GOOD])
    (exact / MARKER_NAME).unlink()
    with Store(exact) as store:  # its files say what it holds
        assert store.numbers == "exact"
    assert read_numbers(exact) == "exact"


def test_a_bad_marker_is_one_clear_error(tmp_path: Path) -> None:
    with Store(tmp_path, numbers="exact"):
        pass
    for text in ("garbage", '{"numbers": "decimal"}', "[]", "x" * 10_000):
        (tmp_path / MARKER_NAME).write_text(text)
        for attempt in (lambda: Store(tmp_path), lambda: load(tmp_path, *BTC)):
            with pytest.raises(StoreError, match=r"_dataset.json is not a dataset marker: it should hold") as caught:
                attempt()
            assert "\n" not in str(caught.value)


def test_a_file_of_the_other_numbers_stops_the_read_and_is_not_quarantined(tmp_path: Path) -> None:
    floats, exact = tmp_path / "floats", tmp_path / "exact"
    with Store(floats) as store:
        store.append([as_floats(GOOD)])
    with Store(exact, numbers="exact") as store:
        store.append([candle(1, ["2", "3", "1", "2", "5", "10", "1", "2"])])
    stranger = next(floats.glob(GLOB))
    target = next(exact.glob(GLOB)).with_name(stranger.name.replace("000000000001", "000000000007"))
    shutil.copy(stranger, target)
    with pytest.raises(StoreError, match=r"holds float numbers but its dataset exact ones .* run `python -m "
                                         r"trio_klines compact`, which restores it from the files") as caught:
        load(exact, *BTC)
    assert "\n" not in str(caught.value)
    assert target.exists() and not (exact / "_quarantine").exists()


def test_exact_stores_refuse_floats_and_values_that_do_not_fit(tmp_path: Path) -> None:
    good = ["2", "3", "1", "2", "5", "10", "1", "2"]
    with Store(tmp_path, numbers="exact") as store:
        with pytest.raises(RefusedCandles, match=r"open 2\.0 is not a decimal string \(exact numbers\)"):
            store.append([as_floats(candle(0, good))])
        with pytest.raises(RefusedCandles, match=r"volume '5\.1{13}' has more than 18 digits before the dot or 12"):
            store.append([candle(0, [*good[:4], "5." + "1" * 13, *good[5:]])])
        with pytest.raises(RefusedCandles, match="high '1e3' is not a decimal string"):
            store.append([candle(0, ["2", "1e3", *good[2:]])])
        with pytest.raises(InvalidCandles, match="not the schema of a dataset of exact numbers"):
            store.append_table(BTC, candles_to_table([as_floats(candle(0, good))]))
        assert store.append_table(BTC, candles_to_table([candle(0, good)], numbers="exact")) == 1
    assert read_series(tmp_path, BTC).schema == EXACT_SCHEMA


def test_an_exact_batch_names_only_its_bad_candles(tmp_path: Path) -> None:
    good = ["2", "3", "1", "2", "5", "10", "1", "2"]
    batch = [candle(0, good), candle(1, ["2", "3", "1", "4", *good[4:]]), candle(2, good),
             msgspec.structs.replace(candle(3, good), open_time=T + 3 * MINUTE + 1), candle(4, good)]  # fmt: skip
    with Store(tmp_path, numbers="exact") as store:
        with pytest.raises(RefusedCandles, match=r"refusing 2 candle\(s\).*prices out of order") as refused:
            store.append(batch)
        assert [r.candle for r in refused.value.refused] == [batch[1], batch[3]]
        assert "is not a 1m boundary" in refused.value.refused[1].reason
        assert store.append([batch[0], batch[2], batch[4]]) == 3  # what a writer does next
    assert exact_strings(load(tmp_path, *BTC, exact=True)) == sent_strings([batch[0], batch[2], batch[4]])


def test_exact_order_is_checked_beyond_what_floats_tell() -> None:
    # As floats the two closes tie; exactly the close is above the high.
    tied = candle(0, ["100000", "100000.000000000001", "100000", "100000.000000000002", "5", "10", "1", "2"])
    assert float(tied.close) == float(tied.high)
    assert "prices out of order" in (candle_problem(tied, exact=True) or "")
    padded = candle(0, ["1.0", "1.00", "1", "1.000", "5", "10", "5.0000", "10"])  # the same values, padded
    assert candle_problem(padded, exact=True) is None
    assert candle_problem(candle(0, ["2", "3", "1", "2", "5", "10", "1", "2"])) is not None  # strings in float mode


def test_raw_readers_get_decimal_columns(tmp_path: Path) -> None:
    candles = [candle(i, ["148205200.10773722", "148205200.10773722", "1", "2", "5", "148205200.10773722", "1",
                          "2"]) for i in range(3)]  # fmt: skip
    with Store(tmp_path, numbers="exact") as store:
        store.append(candles)
    frame = pd.read_parquet(tmp_path)
    assert isinstance(frame["quote_volume"].iloc[0], Decimal)
    assert frame["quote_volume"].iloc[0] == Decimal("148205200.10773722")
    assert pq.read_table(next(tmp_path.glob(GLOB))).schema.field("open").type == EXACT_TYPE
    got = duckdb.sql(f"SELECT CAST(quote_volume AS VARCHAR) AS q FROM read_parquet('{tmp_path}/{GLOB}')").fetchall()
    assert {row[0] for row in got} == {"148205200.107737220000"}
    batches = scan(tmp_path).read_all()
    assert batches.schema.field("quote_volume").type == EXACT_TYPE
    assert batches.column("quote_volume").to_pylist() == [Decimal("148205200.10773722")] * 3
    Store(tmp_path / "float").close()
    with pytest.raises(ConfigError, match="holds float numbers: exact=True reads a dataset recorded with"):
        load(tmp_path / "float", *BTC, exact=True)


@needs_realdata
def test_every_real_decimal_string_is_stored_and_read_back_digit_for_digit(tmp_path: Path) -> None:
    """Every capture of ../shared/realdata through its path into an exact store (the WebSocket parser, the REST
    parser, the archive's CSV reader), one root per file; read back, every value is the string sent."""
    seen = 0
    for index, path in enumerate(sorted(REALDATA.glob("*.jsonl"))):
        closed = [c for line in path.read_text(encoding="utf-8").splitlines() if '"x":true' in line
                  if (c := parse_frame(line, market_of(path.name), exact=True)) is not None]  # fmt: skip
        seen += _store_and_compare(tmp_path / f"ws{index}", closed)
    for index, path in enumerate(sorted(p for p in REALDATA.glob("*_rest_*.json") if "error" not in p.name)):
        seen += _store_and_compare(tmp_path / f"rest{index}",
                                   parse_rest_klines(path.read_bytes(), *rest_series(path), exact=True))
    for index, path in enumerate(csv_files()):
        key = Series(market_of(path.name), "ADABTC" if "adabtc" in path.name else "BTCUSDT",
                     "1h" if "_1h_" in path.name else "1m")  # fmt: skip
        text = path.read_bytes()
        tables = list(read_archive_csv(text, *key, numbers="exact"))
        root = tmp_path / f"csv{index}"
        with Store(root, numbers="exact") as store:
            for table in tables:
                store.append_table(key, table)
        frame = load(root, *key, exact=True)
        with io.StringIO(text.decode()) as rows:
            sent = [row for row in csv.reader(rows) if row[0].isdigit()]
        columns = (1, 2, 3, 4, 5, 7, 9, 10)
        assert exact_strings(frame) == [[canonical(row[i]) for row in sent] for i in columns], path.name
        seen += len(sent) * 8
    # Every price and volume string of the captures' closed candles, REST rows and CSV rows: the 148,864 of
    # tests/core/test_decimals.py but the 2,936 of open candles' updates, which a recorder does not store.
    assert seen == 145_928


def _store_and_compare(root: Path, candles: list[Candle]) -> int:
    if not candles:
        return 0
    last = {(c.market, c.symbol, c.interval, c.open_time): c for c in candles}  # a repeat: the last one wins
    with Store(root, numbers="exact") as store:
        store.append(candles)
    keys = sorted({k[:3] for k in last})
    for key in keys:
        sent = [c for k, c in sorted(last.items()) if k[:3] == key]
        assert exact_strings(load(root, *key, exact=True)) == sent_strings(sent), (root, key)
    assert pa.Table.from_batches(scan(root).read_all().to_batches()).schema.field("open").type == EXACT_TYPE
    return len(candles) * 8
