"""The Parquet store on a real disk: appends, reads, sealing, scan, coverage, third-party readers, bad files."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import subprocess
import sys
import types
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import duckdb
import msgspec
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

import trio_klines.store.dataset
import trio_klines.store.fileops
import trio_klines.store.landing
from trio_klines.core.gaps import Gap
from trio_klines.core.markets import Series
from trio_klines.core.parse import Candle
from trio_klines.errors import ConfigError, KlinesError
from trio_klines.store import periodfiles
from trio_klines.store.coverage import coverage
from trio_klines.store.dataset import (
    CorruptFile,
    InvalidCandles,
    Store,
    StoreError,
    StoreLocked,
    StoreWriteError,
    compact,
    last_open_time,
    load,
    read_series,
    scan,
)
from trio_klines.store.fileops import FileOps
from trio_klines.store.layout import FileName
from trio_klines.store.periodfiles import serialize
from trio_klines.store.status import store_status
from trio_klines.store.tables import COLUMNS, SCHEMA, SERIES_COLUMNS, candles_to_dataframe, candles_to_table

JAN_2024 = 1_704_067_200_000
FEB_2024 = 1_706_745_600_000
MINUTE = 60_000
DAY = 86_400_000
BTC_1M = Series("spot", "BTCUSDT", "1m")
ETH_1M = Series("spot", "ETHUSDT", "1m")
EPOCH = pd.Timestamp(0, tz="UTC")
SEAL = 600.0
#: For tests that append thousands of times: fsync proves nothing here and costs milliseconds.
FAST = FileOps(durable=False)


def candle(open_time: int, value: float = 1.0, *, symbol: str = "BTCUSDT", interval: str = "1m") -> Candle:
    half = value / 2
    return Candle("spot", symbol, interval, open_time, value, value + 1, half, value, 3.0, 4.0, int(value), 1.5, 2.5)


def minutes(first: int, count: int, value: float = 1.0, **kwargs: str) -> list[Candle]:
    return [candle(first + i * MINUTE, value + i, **kwargs) for i in range(count)]


def stored(root: Path, key: Series = BTC_1M) -> dict[int, float]:
    frame = load(root, *key)
    opens = ((frame["candle_begin_time"] - EPOCH) // pd.Timedelta(milliseconds=1)).tolist()
    return dict(zip(opens, frame["open"].tolist(), strict=True))


def series_path(root: Path, key: Series = BTC_1M) -> Path:
    interval = key.interval.replace("M", "%4D")
    return root.joinpath(f"market={key.market}", f"interval={interval}", f"symbol={key.symbol}")


def files(root: Path, key: Series = BTC_1M) -> list[str]:
    directory = series_path(root, key)
    return sorted(os.listdir(directory)) if directory.is_dir() else []


def landing(root: Path) -> list[str]:
    directory = root / "_landing"
    return sorted(os.listdir(directory)) if directory.is_dir() else []


def raw(root: Path) -> pd.DataFrame:
    """What pandas reads of the root, as a raw reader: the sealed files only."""
    return pd.read_parquet(root)


def codec(path: Path) -> str:
    return str(pq.read_metadata(path).row_group(0).column(0).compression)


def temporaries(root: Path) -> list[str]:
    return [n for _, _, names in os.walk(root) for n in names if n.endswith(".tmp") or n == "_journal.json"]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def now() -> list[float]:
    """The store's clock (seconds): a round is due once the oldest landing file waited ``SEAL``."""
    return [0.0]


@pytest.fixture
def store(root: Path, now: list[float]) -> Iterator[Store]:
    with Store(root, clock=lambda: now[0]) as opened:
        yield opened


# --- round trips --------------------------------------------------------------------------------


def test_append_then_load_gives_the_seed_dataframe(store: Store, root: Path) -> None:
    batch = minutes(FEB_2024 - 5 * MINUTE, 10, 100.0)  # across a period boundary
    assert store.append(list(reversed(batch))) == 10
    expected = candles_to_dataframe(batch)
    pd.testing.assert_frame_equal(load(root, "spot", "btcusdt", "1m"), expected)  # from the landing file
    assert landing(root) == ["000000000001.parquet"] and files(root) == []
    assert list(expected.columns) == list(COLUMNS)
    assert str(expected.index.tz) == "UTC" and expected.index.name == "candle_end_time"
    assert store.seal() == 10
    pd.testing.assert_frame_equal(load(root, *BTC_1M), expected)  # from the series' files
    assert files(root) == ["2024-01_000000000001-000000000001.parquet", "2024-02_000000000002-000000000002.parquet"]
    assert landing(root) == []


def test_load_sees_landing_rows_and_raw_readers_see_them_once_sealed(store: Store, root: Path) -> None:
    store.append(minutes(JAN_2024, 5, 1.0))
    store.seal()
    store.append(minutes(JAN_2024 + 5 * MINUTE, 5, 10.0) + minutes(JAN_2024, 2, 5.0, symbol="ETHUSDT"))
    assert len(stored(root)) == 10 and len(stored(root, ETH_1M)) == 2
    assert len(raw(root)) == 5  # a raw reader lags by up to a round: the landing files are hidden from it
    store.seal()
    frame = raw(root)
    assert len(frame) == 12 and not frame.duplicated(["market", "interval", "symbol", "candle_begin_time"]).any()
    assert landing(root) == []


def test_later_writes_win_sealed_or_not(root: Path, now: list[float]) -> None:
    with Store(root, clock=lambda: now[0]) as store:
        store.append(minutes(JAN_2024, 10, 1.0))
        store.append([candle(JAN_2024 + 3 * MINUTE, 50.0), candle(JAN_2024 + 12 * MINUTE, 60.0)])
        store.append([candle(JAN_2024 + 3 * MINUTE, 70.0), candle(JAN_2024 + 3 * MINUTE, 80.0)])  # last in batch
        expected = {JAN_2024 + i * MINUTE: 1.0 + i for i in range(10)}
        expected |= {JAN_2024 + 3 * MINUTE: 80.0, JAN_2024 + 12 * MINUTE: 60.0}
        assert stored(root) == expected
        assert len(landing(root)) == 3 and files(root) == []
        assert store.seal() == 13  # the landing files' rows, a repeat too
        assert stored(root) == expected
        assert files(root) == ["2024-01_000000000001-000000000001.parquet"]
        store.append([candle(JAN_2024 + 3 * MINUTE, 90.0)])  # over a sealed row, not sealed yet
        assert stored(root)[JAN_2024 + 3 * MINUTE] == 90.0
    expected[JAN_2024 + 3 * MINUTE] = 90.0
    with Store(root) as store:  # after a restart the next write still wins
        store.append([candle(JAN_2024, 91.0)])
        assert store.last_open_time(*BTC_1M) == JAN_2024 + 12 * MINUTE
    assert stored(root) == expected | {JAN_2024: 91.0}
    # Its home was the one segment: rewritten in place, raw readers see each open time once.
    assert files(root) == ["2024-01_000000000001-000000000001.parquet"]
    assert len(raw(root)) == len(expected)


@pytest.mark.parametrize("sealed", [False, True])
def test_load_selects_by_open_time(store: Store, root: Path, sealed: bool) -> None:
    store.append(minutes(FEB_2024 - 3 * MINUTE, 6))
    if sealed:
        store.seal()

    def opens(start: object = None, end: object = None) -> list[int]:
        frame = load(root, *BTC_1M, start=start, end=end)  # type: ignore[arg-type]
        return (((frame["candle_begin_time"] - EPOCH) // pd.Timedelta(milliseconds=1) - FEB_2024) // MINUTE).tolist()

    assert opens() == [-3, -2, -1, 0, 1, 2]
    assert opens(FEB_2024 - MINUTE, FEB_2024 + MINUTE) == [-1, 0]  # start included, end excluded
    assert opens("2024-02-01") == [0, 1, 2]  # naive means UTC
    assert opens(end=datetime(2024, 1, 31, 23, 58)) == [-3]
    assert opens(pd.Timestamp("2024-02-01 01:00", tz="Europe/Paris")) == [0, 1, 2]
    assert opens(FEB_2024 + 30_001) == [1, 2]
    assert opens(FEB_2024 + MINUTE, FEB_2024) == []
    with pytest.raises(ConfigError):
        load(root, *BTC_1M, start="yesterday-ish")
    with pytest.raises(ConfigError):
        load(root, *BTC_1M, start=True)  # type: ignore[arg-type]


def test_loading_nothing(store: Store, root: Path, tmp_path: Path) -> None:
    empty = load(root, "spot", "ETHUSDT", "1h")
    assert empty.empty and list(empty.columns) == list(COLUMNS)
    with pytest.raises(StoreError, match="no store"):
        load(tmp_path / "nowhere", *BTC_1M)
    with pytest.raises(ConfigError):
        load(root, "moon", "BTCUSDT", "1m")
    with pytest.raises(ConfigError):
        load(root, "spot", "../../etc", "1m")


def test_last_open_time_and_series_count_landing_rows(root: Path, now: list[float]) -> None:
    with Store(root, clock=lambda: now[0]) as store:
        assert store.last_open_time(*BTC_1M) is None and store.series() == []
        store.append(minutes(JAN_2024, 5) + minutes(FEB_2024, 2) + minutes(JAN_2024, 3, symbol="ETHUSDT"))
        store.append([candle(JAN_2024 - 40 * DAY)])  # a late backfill far behind
        assert files(root) == []  # all of it in landing files
        assert store.last_open_time(*BTC_1M) == FEB_2024 + MINUTE
        assert store.series() == [BTC_1M, ETH_1M]
        assert last_open_time(root, *BTC_1M) == FEB_2024 + MINUTE  # a reader's view, without the lock
        store.seal()
        store.append([candle(FEB_2024 + 5 * MINUTE, symbol="ETHUSDT")])
        assert store.last_open_time(*ETH_1M) == FEB_2024 + 5 * MINUTE  # landing beyond the sealed rows
        assert last_open_time(root, *ETH_1M) == FEB_2024 + 5 * MINUTE
        assert store.last_open_time(*BTC_1M) == FEB_2024 + MINUTE  # from the footers
    assert last_open_time(root, *BTC_1M) == FEB_2024 + MINUTE
    assert last_open_time(root, "spot", "XRPUSDT", "1m") is None
    with Store(root) as store:
        assert store.last_open_times() == {BTC_1M: FEB_2024 + MINUTE, ETH_1M: FEB_2024 + 5 * MINUTE}
        assert store.series() == [BTC_1M, ETH_1M]
        assert store.last_open_time("spot", "XRPUSDT", "1m") is None


def test_minute_and_month_series_stay_apart(store: Store, root: Path) -> None:
    store.append([*minutes(JAN_2024, 3), candle(JAN_2024, 7.0, interval="1M"), candle(FEB_2024, 8.0, interval="1M")])
    store.seal()
    assert sorted(os.listdir(root / "market=spot")) == ["interval=1%4D", "interval=1m"]
    assert stored(root, Series("spot", "BTCUSDT", "1M")) == {JAN_2024: 7.0, FEB_2024: 8.0}
    assert len(stored(root)) == 3
    assert files(root, Series("spot", "BTCUSDT", "1M")) == ["2024_000000000001-000000000001.parquet"]


# --- sealing ------------------------------------------------------------------------------------


def test_a_round_is_due_once_the_oldest_landing_file_has_waited(root: Path, now: list[float]) -> None:
    with Store(root, clock=lambda: now[0], seal_seconds=SEAL) as store:
        store.append(minutes(JAN_2024, 2))
        assert store.seal_debt() == 0.0
        now[0] = SEAL - 1
        store.append(minutes(JAN_2024 + 2 * MINUTE, 2))
        assert files(root) == [] and len(landing(root)) == 2 and store.sealed_rows == 0
        now[0] = SEAL
        assert store.seal_debt() == 1.0  # due: the next append with seal=True runs the round
        store.append(minutes(JAN_2024 + 4 * MINUTE, 2))
        assert landing(root) == [] and len(files(root)) == 1
        assert (store.sealed_rows, store.sealed_files, store.seal_debt()) == (6, 1, 0.0)
        # The clock starts again with the next landing file, not with the last round.
        now[0] = 2 * SEAL - 1
        store.append(minutes(JAN_2024 + 6 * MINUTE, 1))
        now[0] = 3 * SEAL - 2
        store.append(minutes(JAN_2024 + 7 * MINUTE, 1))
        assert len(landing(root)) == 2
        now[0] = 3 * SEAL - 1
        assert store.seal_due() == 0.0
        assert landing(root) == [] and store.sealed_files == 2
    assert len(raw(root)) == 8


def test_sealed_rows_counts_the_rows_sealed_not_the_rows_rewritten(store: Store) -> None:
    store.append(minutes(JAN_2024, 6))
    assert store.seal() == 6
    store.append(minutes(JAN_2024 + 6 * MINUTE, 2))
    assert store.seal() == 2  # two rows sealed, into the segment that held six
    assert store.sealed_rows == 8


def test_a_round_is_due_sooner_when_many_rows_or_files_wait(
    root: Path, now: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(trio_klines.store.dataset, "MAX_UNSEALED_ROWS", 10)
    monkeypatch.setattr(trio_klines.store.dataset, "MAX_LANDING_FILES", 3)
    with Store(root, clock=lambda: now[0], ops=FAST) as store:
        store.append(minutes(JAN_2024, 9), seal=False)
        assert store.seal_debt() == 0.0
        store.append(minutes(JAN_2024 + 9 * MINUTE, 1), seal=False)
        assert store.seal_debt() == 1.0  # 10 rows wait
        store.append(minutes(JAN_2024 + 10 * MINUTE, 10), seal=False)
        assert store.seal_debt() == 2.0  # twice the rows: fallen behind
        store.seal()
        assert store.seal_debt() == 0.0
        for i in range(2):
            store.append([candle(FEB_2024 + i * MINUTE)])
        assert len(landing(root)) == 2
        store.append([candle(FEB_2024 + 2 * MINUTE)])  # the third file starts a round
        assert landing(root) == []
        for i in range(6):
            store.append([candle(FEB_2024 + (3 + i) * MINUTE)], seal=False)
        assert store.seal_debt() == 2.0  # twice the files
    assert len(stored(root)) == 29


def test_seal_debt_falls_behind_after_two_waits(store: Store, now: list[float]) -> None:
    assert store.seal_debt() == 0.0  # nothing waits
    store.append(minutes(JAN_2024, 1), seal=False)
    now[0] = SEAL
    assert store.seal_debt() == 1.0
    now[0] = 2 * SEAL
    assert store.seal_debt() == 2.0
    assert store.seal_due() == 0.0
    assert store.seal_due() == 0.0  # nothing due: nothing done
    assert store.sealed_rows == 1


def test_seal_due_runs_a_round_in_steps(root: Path, now: list[float]) -> None:
    symbols = [f"S{i}USDT" for i in range(4)]
    keys = [Series("spot", s, "1m") for s in symbols]
    with Store(root, clock=lambda: now[0], ops=FAST) as store:
        for i in range(8):
            store.append([candle(JAN_2024 + i * MINUTE, float(i), symbol=s) for s in symbols], seal=False)
        now[0] = SEAL
        assert all(files(root, k) == [] for k in keys)  # nothing sealed yet, even though it is due
        assert store.seal_due(max_files=1) == 1.0  # one series' segment written; the round goes on
        assert sum(bool(files(root, k)) for k in keys) == 1
        assert len(landing(root)) == 8  # landing files go once the whole round is done
        store.append([candle(FEB_2024, symbol="S0USDT")], seal=False)  # lands during the round: not in it
        assert store.seal_due(max_rows=1) == 1.0  # at least one series, however small the budget
        assert sum(bool(files(root, k)) for k in keys) == 2
        for k in keys:  # exact readers see everything, half sealed or not
            assert stored(root, k) == {JAN_2024 + i * MINUTE: float(i) for i in range(8)} | (
                {FEB_2024: 1.0} if k.symbol == "S0USDT" else {}
            )
        assert store.seal_due() == 0.0  # the rest of the round; the newer file is not due yet
        assert all(len(files(root, k)) == 1 for k in keys)
        assert landing(root) == ["000000000009.parquet"]
        assert (store.sealed_rows, store.sealed_files) == (32, 4)
        now[0] = 2 * SEAL
        assert store.seal_due() == 0.0
        assert landing(root) == [] and files(root, keys[0])[-1].startswith("2024-02")
    assert len(raw(root)) == 33


def test_close_seals_what_waits(root: Path, now: list[float]) -> None:
    store = Store(root, clock=lambda: now[0])
    store.append(minutes(JAN_2024, 3) + minutes(JAN_2024, 2, symbol="ETHUSDT"))
    assert files(root) == [] and store.seal_debt() == 0.0
    store.close()
    assert landing(root) == []
    assert len(files(root)) == 1 and len(files(root, ETH_1M)) == 1
    assert len(raw(root)) == 5
    with Store(root):  # released
        pass


def test_landing_files_left_by_an_earlier_run_are_sealed_again_harmlessly(root: Path, tmp_path: Path) -> None:
    # A crash after a round's files were renamed but before its landing files were removed: sealing the
    # same rows again changes nothing.
    with Store(root) as store:
        store.append(minutes(JAN_2024, 5, 1.0))
        store.append(minutes(JAN_2024 + 3 * MINUTE, 5, 10.0) + minutes(JAN_2024, 1, symbol="ETHUSDT"))
        saved = tmp_path / "saved"
        shutil.copytree(root / "_landing", saved)
    before = {name: (series_path(root) / name).read_bytes() for name in files(root)}
    expected = stored(root)
    shutil.rmtree(root / "_landing")
    shutil.copytree(saved, root / "_landing")
    now = [1_000.0]
    with Store(root, clock=lambda: now[0]) as store:
        assert store.seal_debt() == 1.0  # due at once: they waited during the crash
        assert store.seal_due() == 0.0
        assert landing(root) == []
    assert stored(root) == expected and len(stored(root, ETH_1M)) == 1
    assert {name: (series_path(root) / name).read_bytes() for name in files(root)} == before
    assert len(raw(root)) == 9


def legacy_store(root: Path) -> Path:
    """A series as the layout before segments left it: two January files that overlap, one for February."""
    directory = series_path(root)
    directory.mkdir(parents=True)
    layout = [
        (FileName("2024-01", 1, 1), minutes(JAN_2024, 10, 1.0)),
        (FileName("2024-01", 2, 2), minutes(JAN_2024 + 5 * MINUTE, 10, 50.0)),  # later: wins on 5..9
        (FileName("2024-02", 3, 3), minutes(FEB_2024, 3, 7.0)),
    ]
    for name, candles in layout:
        (directory / str(name)).write_bytes(serialize(candles_to_table(candles), BTC_1M).to_pybytes())
    return directory


LEGACY = (
    {JAN_2024 + i * MINUTE: 1.0 + i for i in range(5)}
    | {JAN_2024 + (5 + i) * MINUTE: 50.0 + i for i in range(10)}
    | {FEB_2024 + i * MINUTE: 7.0 + i for i in range(3)}
)


def test_compact_seals_and_merges_a_legacy_overlapping_period(root: Path) -> None:
    legacy_store(root)
    assert len(raw(root)) == 23  # the older layout: a raw reader sees 5 open times twice
    assert stored(root) == LEGACY  # load merges them, the later file winning
    with Store(root) as store:
        store.append([candle(FEB_2024 + 3 * MINUTE, 9.0, symbol="ETHUSDT")])
        summary = store.compact()
    assert (summary.series, summary.periods_merged, summary.files_before, summary.files_after) == (2, 1, 2, 1)
    assert (summary.rows, summary.files, summary.errors, summary.quarantined) == (1, 1, (), 0)
    assert "merged 1 period(s) of the older layout, 2 file(s) into 1" in str(summary)
    assert files(root) == ["2024-01_000000000001-000000000002.parquet", "2024-02_000000000003-000000000003.parquet"]
    assert stored(root) == LEGACY
    frame = raw(root)
    assert len(frame) == 19 and not frame.duplicated(["symbol", "candle_begin_time"]).any()
    assert compact(root).periods_merged == 0  # done once


def test_sealing_into_a_legacy_series_merges_its_overlaps_first(root: Path) -> None:
    legacy_store(root)
    with Store(root) as store:
        store.append([candle(JAN_2024 + 7 * MINUTE, 99.0), candle(JAN_2024 + 30 * MINUTE, 98.0)])
    assert stored(root) == LEGACY | {JAN_2024 + 7 * MINUTE: 99.0, JAN_2024 + 30 * MINUTE: 98.0}
    assert files(root)[0] == "2024-01_000000000001-000000000002.parquet"  # the merged file took both rows
    assert len(files(root)) == 2
    frame = raw(root)
    assert len(frame) == 19 and not frame.duplicated(["candle_begin_time"]).any()


def seal_every_append(store: Store, now: list[float], batches: list[list[Candle]]) -> None:
    """Live recording: each batch lands, waits a seal period, and a round seals it."""
    for batch in batches:
        store.append(batch)
        now[0] += SEAL
        assert store.seal_due() == 0.0


def test_the_growing_tail_is_snappy_and_packed_once_a_new_segment_starts(root: Path, now: list[float]) -> None:
    with Store(root, clock=lambda: now[0], ops=FAST) as store:
        seal_every_append(store, now, [minutes(JAN_2024 + i * 10 * MINUTE, 10) for i in range(143)])
        (tail,) = files(root)
        assert codec(series_path(root) / tail) == "SNAPPY"  # rewritten at every seal: cheap to write
        seal_every_append(store, now, [minutes(JAN_2024 + 1_430 * MINUTE, 10)])
        assert codec(series_path(root) / tail) == "ZSTD"  # full (1,440 rows): packed, never rewritten again
        seal_every_append(store, now, [minutes(JAN_2024 + 1_440 * MINUTE, 10)])
        first, second = files(root)
        assert (first, codec(series_path(root) / first)) == (tail, "ZSTD")
        assert codec(series_path(root) / second) == "SNAPPY"
        # The next period starts: the last segment of January stops growing, so it is packed.
        seal_every_append(store, now, [minutes(FEB_2024, 10)])
        assert [codec(series_path(root) / name) for name in files(root)] == ["ZSTD", "ZSTD", "SNAPPY"]
    assert [pq.read_metadata(series_path(root) / name).num_rows for name in files(root)] == [1_440, 10, 10]


def test_a_correction_of_an_old_open_time_rewrites_its_home_segment(root: Path, now: list[float]) -> None:
    with Store(root, clock=lambda: now[0], ops=FAST) as store:
        store.append(minutes(JAN_2024, 1_440, 1.0))  # a day's history: one packed segment
        store.seal()
        seal_every_append(store, now, [minutes(JAN_2024 + 1_440 * MINUTE, 10, 5_000.0)])  # the live tail
        names = files(root)
        assert len(names) == 2
        before = os.stat(series_path(root) / names[0]).st_ino
        seal_every_append(store, now, [[candle(JAN_2024 + 5 * MINUTE, 77.0), candle(JAN_2024 + 1_445 * MINUTE, 66.0)]])
        assert files(root) == names  # no new file: each row went to the segment holding its open time
        assert os.stat(series_path(root) / names[0]).st_ino != before  # replaced whole, by rename
        assert codec(series_path(root) / names[0]) == "ZSTD"
    got = stored(root)
    assert (got[JAN_2024 + 5 * MINUTE], got[JAN_2024 + 1_445 * MINUTE], len(got)) == (77.0, 66.0, 1_450)
    frame = raw(root)
    assert len(frame) == 1_450 and not frame.duplicated(["candle_begin_time"]).any()


def test_history_lands_whole_in_one_segment_per_period(store: Store, root: Path) -> None:
    store.append(minutes(FEB_2024 - 3 * DAY, 6 * 24 * 60))  # six days across a month: far beyond the cap
    store.seal()
    assert [pq.read_metadata(series_path(root) / name).num_rows for name in files(root)] == [3 * 1_440, 3 * 1_440]


def test_live_appends_make_a_file_a_day_not_one_a_seal(root: Path, now: list[float]) -> None:
    # 1m candles, a seal every 10 minutes: each file takes a day of them (1,440), so a month holds about
    # 31 files, not one per seal (4,464). Four days across a month's end, the periods cut where they should.
    start = FEB_2024 - 2 * DAY
    with Store(root, clock=lambda: now[0], ops=FAST) as store:
        seal_every_append(store, now, [minutes(start + i * 10 * MINUTE, 10) for i in range(4 * 144)])
        seal_every_append(store, now, [minutes(start + 4 * DAY, 10)])
    names = files(root)
    assert [name[:7] for name in names] == ["2024-01"] * 2 + ["2024-02"] * 3
    ranges = []
    for name in names[:4]:
        meta = pq.read_metadata(series_path(root) / name)
        stats = meta.row_group(0).column(0).statistics
        ranges.append((stats.min_raw, stats.max_raw))
        assert meta.num_rows == 1_440 and meta.row_group(0).column(0).compression == "ZSTD"
    assert ranges == [(start + d * DAY, start + (d + 1) * DAY - MINUTE) for d in range(4)]
    assert codec(series_path(root) / names[4]) == "SNAPPY"  # the fifth day has begun
    assert len(raw(root)) == 4 * 1_440 + 10


def test_appending_reads_no_stored_data(root: Path, now: list[float], monkeypatch: pytest.MonkeyPatch) -> None:
    with Store(root, clock=lambda: now[0], ops=FAST) as store:
        store.append(minutes(JAN_2024, 5_000))
        store.seal()
        reads: list[object] = []

        def spying(real: Callable[..., object]) -> Callable[..., object]:
            def spy(path: object, *args: object, **kwargs: object) -> object:
                reads.append(path)
                return real(path, *args, **kwargs)

            return spy

        with monkeypatch.context() as patch:
            patch.setattr(periodfiles.pq, "ParquetFile", spying(periodfiles.pq.ParquetFile))
            patch.setattr(periodfiles.pq, "read_metadata", spying(periodfiles.pq.read_metadata))
            for i in range(50):
                store.append([candle(JAN_2024 + (5_000 + i) * MINUTE)])
        assert reads == []  # an append writes its landing file, nothing else


def test_sealing_into_the_tail_reads_nothing_back(
    root: Path, now: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[object] = []
    real = trio_klines.store.dataset.read_file

    def spy(path: Path, *args: object, **kwargs: object) -> object:
        reads.append(path)
        return real(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(trio_klines.store.dataset, "read_file", spy)
    with Store(root, clock=lambda: now[0], ops=FAST) as store:
        seal_every_append(store, now, [[candle(JAN_2024 + i * MINUTE, float(i))] for i in range(100)])
        assert store.sealed_files == 100 and len(files(root)) == 1
    assert reads == []  # the growing segment's table was still in memory
    assert stored(root) == {JAN_2024 + i * MINUTE: float(i) for i in range(100)}


def test_a_packed_segment_a_reader_quarantined_is_not_written_back(
    root: Path, now: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    with Store(root, clock=lambda: now[0], ops=FAST) as store:
        store.append(minutes(JAN_2024, 1_440))  # full: packed, not kept in memory
        store.seal()
        (name,) = files(root)
        victim = series_path(root) / name
        victim.write_bytes(victim.read_bytes()[:-10])
        with caplog.at_level(logging.ERROR, logger="trio_klines.store"):
            assert stored(root) == {}  # the reader moves it to quarantine
        assert "corrupt file" in caplog.text
        # The store's plan still lists it: the correction finds it gone and gets a segment of its own.
        store.append([candle(JAN_2024 + 5 * MINUTE, 9.0)])
        store.seal()
    assert stored(root) == {JAN_2024 + 5 * MINUTE: 9.0}
    assert files(root) == ["2024-01_000000000002-000000000002.parquet"]  # a number is never given out twice


def test_a_growing_segment_a_reader_quarantined_is_not_written_back_from_memory(
    root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with Store(root, ops=FAST) as store:
        store.append(minutes(JAN_2024, 3))
        store.seal()
        victim = series_path(root) / files(root)[0]
        victim.write_bytes(victim.read_bytes()[:-10])
        with caplog.at_level(logging.ERROR, logger="trio_klines.store"):
            assert stored(root) == {}  # the reader moves it to quarantine
        store.append(minutes(JAN_2024 + 3 * MINUTE, 3, 10.0))
        store.seal()
    assert sorted(stored(root)) == [JAN_2024 + i * MINUTE for i in range(3, 6)]


# --- scan ---------------------------------------------------------------------------------------


def scanned(table: pa.Table) -> dict[Series, pa.Table]:
    out = {}
    for values in sorted({tuple(row.values()) for row in table.select(list(SERIES_COLUMNS)).to_pylist()}):
        key = Series(*values)
        mask = [tuple(r.values()) == values for r in table.select(list(SERIES_COLUMNS)).to_pylist()]
        out[key] = table.filter(pa.array(mask)).select(list(SCHEMA.names))
    return out


def test_scan_returns_exactly_what_load_returns(root: Path, now: list[float]) -> None:
    hourly = Series("usdt_futures", "BTCUSDT", "1h")
    with Store(root, clock=lambda: now[0]) as store:
        store.append(minutes(JAN_2024, 20, 1.0) + minutes(JAN_2024, 5, 3.0, symbol="ETHUSDT"))
        store.append([Candle(*hourly, JAN_2024, 1.0, 2.0, 0.5, 1.5, 1.0, 1.0, 1, 0.1, 0.1)])
        store.seal()
        store.append(minutes(JAN_2024 + 10 * MINUTE, 20, 100.0))  # corrections and new rows, not sealed
        store.append(minutes(FEB_2024, 2, 5.0, symbol="ETHUSDT"))
        reader = scan(root)
        assert reader.schema.names == [*SERIES_COLUMNS, *SCHEMA.names]
        got = scanned(reader.read_all())
        assert list(got) == [BTC_1M, ETH_1M, hourly]
        for key, table in got.items():
            assert table.equals(read_series(root, key).cast(table.schema))
        assert got[BTC_1M].num_rows == 30 and got[ETH_1M].num_rows == 7
        one = scan(root, symbol="ETHUSDT", start="2024-02-01", columns=["symbol", "candle_begin_time", "open"])
        assert one.read_all().to_pydict() == {
            "symbol": ["ETHUSDT", "ETHUSDT"],
            "candle_begin_time": [pd.Timestamp(FEB_2024 + i * MINUTE, unit="ms", tz="UTC") for i in range(2)],
            "open": [5.0, 6.0],
        }
        assert scan(root, market=["usdt_futures"], interval="1h").read_all().num_rows == 1
        assert scan(root, market="coin_futures").read_all().num_rows == 0
        with pytest.raises(ConfigError, match="unknown column"):
            scan(root, columns=["close_time"])
    after = scanned(scan(root).read_all())  # the same once everything is sealed
    assert after.keys() == got.keys() and all(after[key].equals(table) for key, table in got.items())
    connection = duckdb.connect()
    connection.register("candles", scan(root, market="spot", symbol="BTCUSDT"))  # DuckDB queries the stream as a table
    assert connection.sql("SELECT count(*), max(open) FROM candles").fetchall() == [(30, 119.0)]


# --- readers ------------------------------------------------------------------------------------


def make_mixed_store(root: Path) -> None:
    with Store(root) as store:
        store.append([*minutes(JAN_2024, 5), candle(JAN_2024, 9.0, interval="1M")])
        store.append(minutes(JAN_2024, 2, symbol="ETHUSDT"))
        store.append([Candle("usdt_futures", "BTCUSDT", "1h", JAN_2024, 1.0, 2.0, 0.5, 1.5, 1.0, 1.0, 1, 0.1, 0.1)])
    # Things readers must not trip over: quarantine, temporary, journal and landing files.
    quarantine = root / "_quarantine" / "market=spot"
    quarantine.mkdir(parents=True)
    (quarantine / "2024-01_000000000001-000000000001.parquet.quarantined").write_bytes(b"junk")
    (series_path(root) / ".2024-01_000000000009-000000000009.parquet.tmp").write_bytes(b"x")
    (root / "_journal.json.corrupt").write_bytes(b"{")
    (root / "_landing" / ".000000000009.parquet.tmp").write_bytes(b"x")


def test_pandas_and_pyarrow_read_the_root_with_partition_columns(root: Path) -> None:
    make_mixed_store(root)
    frame = pd.read_parquet(root)
    counts = frame.groupby(["market", "interval", "symbol"], observed=True).size().to_dict()
    assert counts == {
        ("spot", "1m", "BTCUSDT"): 5,
        ("spot", "1m", "ETHUSDT"): 2,
        ("spot", "1M", "BTCUSDT"): 1,
        ("usdt_futures", "1h", "BTCUSDT"): 1,
    }
    table = ds.dataset(root, partitioning="hive").to_table()
    assert table.num_rows == 9
    assert {"market", "interval", "symbol", *COLUMNS} == set(table.column_names)


def test_duckdb_reads_the_root(root: Path) -> None:
    make_mixed_store(root)
    rows = duckdb.sql(
        f"""
        SELECT market, interval, symbol, count(*) AS n, min(candle_begin_time) AS first
        FROM read_parquet('{root}/market=*/interval=*/symbol=*/*.parquet', hive_partitioning = true)
        GROUP BY ALL ORDER BY ALL
        """
    ).fetchall()
    first = pd.Timestamp(JAN_2024, unit="ms", tz="UTC").to_pydatetime()
    assert [(m, i, s, n) for m, i, s, n, _ in rows] == [
        ("spot", "1M", "BTCUSDT", 1),
        ("spot", "1m", "BTCUSDT", 5),
        ("spot", "1m", "ETHUSDT", 2),
        ("usdt_futures", "1h", "BTCUSDT", 1),
    ]
    assert all(f == first for *_, f in rows)


def test_raw_readers_see_each_open_time_once_and_agree_with_load(root: Path, now: list[float]) -> None:
    with Store(root, clock=lambda: now[0], ops=FAST) as store:
        seal_every_append(
            store,
            now,
            [
                minutes(JAN_2024, 5, 1.0),
                minutes(JAN_2024 + 2 * MINUTE, 5, 10.0),
                minutes(JAN_2024 + 3 * MINUTE, 1, 20.0),
                minutes(JAN_2024 - 3 * MINUTE, 4, 30.0),  # December's, and a correction of January's first
            ],
        )
    glob = f"{root}/market=*/interval=*/symbol=*/*.parquet"
    rows = duckdb.sql(f"SELECT candle_begin_time, open FROM read_parquet('{glob}') ORDER BY 1").fetchall()
    opens = [30.0, 31.0, 32.0, 33.0, 2.0, 10.0, 20.0, 12.0, 13.0, 14.0]
    assert [row[1] for row in rows] == list(stored(root).values()) == opens
    assert len({row[0] for row in rows}) == len(rows)


# --- coverage and status ------------------------------------------------------------------------


def test_coverage_reports_first_last_rows_and_gaps(store: Store, root: Path) -> None:
    store.append(minutes(JAN_2024, 3) + minutes(JAN_2024 + 10 * MINUTE, 2) + minutes(FEB_2024, 1))
    store.seal()
    store.append([candle(JAN_2024 + MINUTE, 5.0)])  # a repeat counts once, sealed or not
    store.append([candle(JAN_2024, 1.0, interval="1M"), candle(JAN_2024 + 60 * DAY, 1.0, interval="1M")])
    report = coverage(root)
    minute = report[BTC_1M]
    assert (minute.first, minute.last, minute.rows) == (JAN_2024, FEB_2024, 6)
    assert minute.gaps == (
        Gap(BTC_1M, JAN_2024 + 3 * MINUTE, JAN_2024 + 10 * MINUTE),
        Gap(BTC_1M, JAN_2024 + 12 * MINUTE, FEB_2024),
    )
    assert minute.missing == 7 + (FEB_2024 - JAN_2024) // MINUTE - 12
    month = report[Series("spot", "BTCUSDT", "1M")]  # in landing files only
    assert month.gaps == (Gap(month.series, FEB_2024, JAN_2024 + 60 * DAY),) and month.missing == 1
    assert coverage(root, [Series("spot", "XRPUSDT", "1m")])[Series("spot", "XRPUSDT", "1m")].rows == 0


def test_status_of_a_store_being_written(store: Store, root: Path) -> None:
    store.append(minutes(JAN_2024, 3))
    store.seal()
    store.append(minutes(JAN_2024 + 5 * MINUTE, 2) + minutes(JAN_2024, 4, symbol="ETHUSDT"))
    report = {s.series: s for s in store_status(root, now=FEB_2024)}  # no lock taken: the store holds it
    assert (report[BTC_1M].rows, report[BTC_1M].missing, report[BTC_1M].files) == (5, 2, 1)
    assert (report[ETH_1M].rows, report[ETH_1M].last, report[ETH_1M].files) == (4, JAN_2024 + 3 * MINUTE, 0)


# --- bad things on disk -------------------------------------------------------------------------


def test_a_truncated_file_is_quarantined_at_start_up_not_deleted(root: Path, caplog: pytest.LogCaptureFixture) -> None:
    with Store(root) as store:
        store.append(minutes(JAN_2024, 10))
        store.append(minutes(FEB_2024, 10, 50.0))
    assert files(root) == ["2024-01_000000000001-000000000001.parquet", "2024-02_000000000002-000000000002.parquet"]
    victim = series_path(root) / files(root)[1]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    with caplog.at_level(logging.ERROR, logger="trio_klines.store"), Store(root) as store:
        assert store.last_open_time(*BTC_1M) == JAN_2024 + 9 * MINUTE
        assert store.quarantined == 1
    assert "corrupt file" in caplog.text and victim.name in caplog.text
    moved = root / "_quarantine/market=spot/interval=1m/symbol=BTCUSDT" / (victim.name + ".quarantined")
    assert moved.read_bytes() == data[: len(data) // 2]
    assert not victim.exists()
    assert len(stored(root)) == 10
    assert coverage(root)[BTC_1M].rows == 10
    with Store(root) as store:  # a number in quarantine is never given out again
        store.append([candle(FEB_2024 + 20 * MINUTE)])
    assert files(root)[-1] == "2024-02_000000000003-000000000003.parquet"


def test_a_reader_quarantines_a_truncated_file_and_keeps_going(root: Path, caplog: pytest.LogCaptureFixture) -> None:
    with Store(root) as store:
        store.append(minutes(JAN_2024, 10))
        store.append(minutes(FEB_2024, 10))
        store.seal()
        victim = series_path(root) / files(root)[0]
        victim.write_bytes(victim.read_bytes()[:-10])
        with caplog.at_level(logging.ERROR, logger="trio_klines.store"):
            assert len(stored(root)) == 10
        assert "corrupt file" in caplog.text
        # The writer's view still lists the moved file: its next round notices and carries on.
        summary = store.compact()
        assert summary.errors == () and summary.periods_merged == 0
        store.append([candle(FEB_2024 + 10 * MINUTE), candle(JAN_2024 + 3 * MINUTE)])
    assert len(stored(root)) == 12


def test_a_flipped_byte_never_gives_a_wrong_candle(root: Path, caplog: pytest.LogCaptureFixture) -> None:
    with Store(root) as store:
        store.append(minutes(JAN_2024, 200, 1000.0))
    expected = stored(root)
    path = series_path(root) / files(root)[0]
    quarantine = root / "_quarantine/market=spot/interval=1m/symbol=BTCUSDT" / (path.name + ".quarantined")
    original = path.read_bytes()
    outcomes = {"same": 0, "quarantined": 0}
    with caplog.at_level(logging.CRITICAL, logger="trio_klines.store"):
        for offset in range(0, len(original), 37):
            damaged = bytearray(original)
            damaged[offset] ^= 0x5A
            path.write_bytes(bytes(damaged))
            got = stored(root)
            if quarantine.exists():
                assert got == {}
                outcomes["quarantined"] += 1
                quarantine.unlink()
            else:
                assert got == expected, f"byte {offset} changed a candle silently"
                outcomes["same"] += 1
    assert outcomes["quarantined"] > outcomes["same"]


#: Flips every bit of a period file's footer and reads the footer back; prints how each read ended.
FOOTER_FLIPS = """
import collections, sys, tempfile
from pathlib import Path
from trio_klines.core.markets import Series
from trio_klines.core.parse import Candle
from trio_klines.errors import CorruptFile
from trio_klines.store.layout import FileName
from trio_klines.store.periodfiles import read_file, read_footer, serialize
from trio_klines.store.tables import candles_to_table

key, name = Series("spot", "BTCUSDT", "1m"), FileName("2024-01", 1, 1)
candles = [Candle(*key, 1_704_067_200_000 + i * 60_000, 1.0, 2.0, 0.5, 1.0, 3.0, 4.0, 1, 1.5, 2.5) for i in range(20)]
data = serialize(candles_to_table(candles), key).to_pybytes()
footer = int.from_bytes(data[-8:-4], "little")
path = Path(tempfile.mkdtemp()) / str(name)
outcomes = collections.Counter()
for offset in range(len(data) - 8 - footer, len(data) - 8):
    for bit in range(8):
        damaged = bytearray(data)
        damaged[offset] ^= 1 << bit
        path.write_bytes(bytes(damaged))
        print(offset, bit, file=sys.stderr, flush=True)
        try:
            read_footer(path, key, name)
            read_file(path, key, name)
            outcomes["read"] += 1
        except (CorruptFile, OSError):
            outcomes["corrupt"] += 1
print(dict(outcomes))
"""


def test_a_flipped_bit_in_a_footer_never_kills_the_process(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", FOOTER_FLIPS], capture_output=True, text=True, timeout=100, check=False, cwd=tmp_path
    )
    last = done.stderr.strip().splitlines()[-3:]
    assert done.returncode == 0, f"killed by signal {-done.returncode} after flipping (offset, bit) {last}"
    assert "corrupt" in done.stdout


def test_a_corrupt_landing_file_is_quarantined_at_open(root: Path, caplog: pytest.LogCaptureFixture) -> None:
    with Store(root) as store:
        store.append(minutes(JAN_2024, 3))
    path = root / "_landing" / "000000000007.parquet"
    path.write_bytes(b"PAR1 not a landing file")
    with caplog.at_level(logging.ERROR, logger="trio_klines.store"):
        assert len(stored(root)) == 3  # a reader skips it, with an error logged
        assert "corrupt landing file" in caplog.text
        with Store(root) as store:
            assert store.quarantined == 1
            assert store.append(minutes(JAN_2024 + 3 * MINUTE, 1)) == 1
    assert landing(root) == [] and len(stored(root)) == 4
    assert (root / "_quarantine/_landing/000000000007.parquet.quarantined").exists()


def fail_os_write(monkeypatch: pytest.MonkeyPatch, code: int, after_bytes: int = 100) -> None:
    """Make every write in the store's file layer fail with ``code`` once ``after_bytes`` are written."""
    budget = [after_bytes]

    def write(fd: int, data: bytes) -> int:
        if budget[0] <= 0:
            raise OSError(code, os.strerror(code))
        written = os.write(fd, bytes(data)[: budget[0]])
        budget[0] -= written
        return written

    fake = types.SimpleNamespace(**{name: getattr(os, name) for name in dir(os) if not name.startswith("__")})
    fake.write = write
    monkeypatch.setattr(trio_klines.store.fileops, "os", fake)


@pytest.mark.parametrize("after_bytes", [0, 100, 5_000])
def test_a_full_disk_stores_nothing_and_the_batch_can_be_retried(
    store: Store, root: Path, monkeypatch: pytest.MonkeyPatch, after_bytes: int
) -> None:
    store.append(minutes(JAN_2024, 5))
    before = landing(root)
    batch = minutes(JAN_2024 + 5 * MINUTE, 300) + minutes(JAN_2024, 3, symbol="ETHUSDT")
    with monkeypatch.context() as patch:
        fail_os_write(patch, errno.ENOSPC, after_bytes)
        with pytest.raises(StoreWriteError) as caught:
            store.append(batch)
    assert caught.value.errno == errno.ENOSPC and not caught.value.committed
    assert "nothing was stored" in str(caught.value)
    assert landing(root) == before and temporaries(root) == []  # no visible file, no temporary file
    assert len(stored(root)) == 5 and len(stored(root, ETH_1M)) == 0
    assert store.append(batch) == 303  # the caller kept its batch: the retry stores it
    store.seal()
    assert len(stored(root)) == 305 and len(stored(root, ETH_1M)) == 3


class FailingOps(FileOps):
    """Fails the ``when``-th call of each operation named in ``failures`` with ``code``."""

    def __init__(self, failures: dict[str, int], code: int) -> None:
        super().__init__(durable=False)
        self.failures, self.code = failures, code
        self.calls: dict[str, int] = {}

    def _maybe_fail(self, operation: str, path: object) -> None:
        self.calls[operation] = self.calls.get(operation, 0) + 1
        if self.failures.get(operation) == self.calls[operation]:
            raise OSError(self.code, os.strerror(self.code), str(path))

    def arm(self, failures: dict[str, int]) -> None:
        self.failures, self.calls = failures, {}

    def write(self, path: Path, data: bytes | memoryview, *, sync: bool = True) -> None:
        self._maybe_fail("write", path)
        super().write(path, data, sync=sync)

    def rename(self, source: Path, target: Path) -> None:
        self._maybe_fail("rename", source)
        super().rename(source, target)

    def fsync_dir(self, path: Path) -> None:
        self._maybe_fail("fsync_dir", path)
        super().fsync_dir(path)

    def makedirs(self, path: Path) -> None:
        self._maybe_fail("makedirs", path)
        super().makedirs(path)

    def unlink(self, path: Path) -> None:
        self._maybe_fail("unlink", path)
        super().unlink(path)

    def sync_files(self, paths: list[Path]) -> None:  # type: ignore[override]
        self._maybe_fail("sync_files", paths)
        super().sync_files(paths)

    def sync_dirs(self, paths: list[Path]) -> None:  # type: ignore[override]
        self._maybe_fail("sync_dirs", paths)
        super().sync_dirs(paths)


XRP_1M = Series("spot", "XRPUSDT", "1m")


@pytest.mark.parametrize(
    ("failures", "first"),
    [
        ({"makedirs": 1}, True),  # the landing directory, made by the first append
        ({"fsync_dir": 1}, True),  # syncing the landing directory's creation
        ({"write": 1}, False),
        ({"rename": 1}, False),
        ({"fsync_dir": 1}, False),  # after the rename: the file is taken back
    ],
)
def test_a_failing_append_is_all_or_nothing(root: Path, failures: dict[str, int], first: bool) -> None:
    ops = FailingOps({}, errno.EIO)
    store = Store(root, ops=ops)
    if not first:
        store.append([candle(JAN_2024, symbol="XRPUSDT")])
    before = landing(root)
    ops.arm(failures)
    batch = minutes(JAN_2024, 4, 10.0) + minutes(JAN_2024, 4, 20.0, symbol="ETHUSDT")
    with pytest.raises(StoreWriteError) as caught:
        store.append(batch)
    assert caught.value.errno == errno.EIO and caught.value.committed is False
    assert landing(root) == before and temporaries(root) == []
    assert stored(root) == {} and store.last_open_time(*ETH_1M) is None
    assert store.append(batch) == 8
    store.close()
    assert stored(root, ETH_1M)[JAN_2024] == 20.0 and len(stored(root)) == 4
    assert len(stored(root, XRP_1M)) == (0 if first else 1)
    assert temporaries(root) == [] and landing(root) == []


def test_a_landing_file_that_may_be_stored_never_beats_a_later_write(root: Path) -> None:
    ops = FailingOps({}, errno.EIO)
    with Store(root, ops=ops) as store:
        store.append([candle(JAN_2024, symbol="XRPUSDT")])  # the landing directory exists
        ops.arm({"fsync_dir": 1, "unlink": 1})
        with pytest.raises(StoreWriteError) as caught:
            store.append([candle(JAN_2024, 1.0)])
        assert caught.value.committed is True  # the batch may be stored: visible, perhaps not durable
        store.append([candle(JAN_2024, 2.0)])  # a later write of the same open time
        store.seal()
        assert stored(root) == {JAN_2024: 2.0}
    assert stored(root) == {JAN_2024: 2.0}


@pytest.mark.parametrize(
    "failures",
    [
        {"write": 2},  # the second series' segment
        {"rename": 2},  # after the first series' segment was renamed into place
        {"sync_files": 1},
        {"sync_dirs": 1},  # every segment in place, the landing files not removed yet
        {"makedirs": 2},
    ],
)
def test_a_failing_round_is_counted_and_retried_and_loses_nothing(
    root: Path, now: list[float], failures: dict[str, int], caplog: pytest.LogCaptureFixture
) -> None:
    ops = FailingOps({}, errno.ENOSPC)
    with Store(root, ops=ops, clock=lambda: now[0]) as store:
        store.append(minutes(JAN_2024, 5, 1.0) + minutes(JAN_2024, 5, 2.0, symbol="ETHUSDT"), seal=False)
        store.append(minutes(JAN_2024 + 3 * MINUTE, 5, 3.0), seal=False)
        expected = (stored(root), stored(root, ETH_1M))
        now[0] = SEAL
        ops.arm(failures)
        with caplog.at_level(logging.ERROR, logger="trio_klines.store"):
            assert store.seal_due() == 0.0  # failed, logged, not due again until a while later
        assert store.seal_errors == 1 and "sealing failed" in caplog.text
        assert len(landing(root)) == 2 and temporaries(root) == []
        assert (stored(root), stored(root, ETH_1M)) == expected  # the rows are in the landing files
        if files(root):  # a segment renamed before the failure holds the same rows: no raw reader sees two
            assert not raw(root).duplicated(["symbol", "candle_begin_time"]).any()
        now[0] = SEAL + 30
        assert store.seal_due() == 0.0
        assert landing(root) == [] and store.seal_errors == 1
    assert (stored(root), stored(root, ETH_1M)) == expected
    assert files(root) == files(root, ETH_1M) == ["2024-01_000000000001-000000000001.parquet"]
    assert len(raw(root)) == 13 and temporaries(root) == []


def test_a_round_failing_inside_append_never_fails_the_durable_append(
    root: Path, now: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    ops = FailingOps({}, errno.EIO)
    with Store(root, ops=ops, clock=lambda: now[0]) as store:
        store.append(minutes(JAN_2024, 3))
        now[0] = SEAL
        ops.arm({"sync_files": 1})  # the round's segments; the landing file is written without it
        with caplog.at_level(logging.ERROR, logger="trio_klines.store"):
            assert store.append(minutes(JAN_2024 + 3 * MINUTE, 2)) == 2  # durable: the failed round is logged
        assert store.seal_errors == 1 and "sealing failed" in caplog.text
        assert len(landing(root)) == 2 and len(stored(root)) == 5
        now[0] = SEAL + 30
        assert store.seal_due() == 0.0
        assert landing(root) == []
    assert len(raw(root)) == 5


def test_seal_raises_when_a_round_fails_and_the_rows_stay(root: Path) -> None:
    ops = FailingOps({}, errno.EIO)
    with Store(root, ops=ops) as store:
        store.append(minutes(JAN_2024, 3))
        ops.arm({"rename": 1})
        with pytest.raises(StoreWriteError, match="sealing is retried later"):
            store.seal()
        assert len(landing(root)) == 1 and len(stored(root)) == 3
        assert store.seal() == 3
    assert landing(root) == [] and len(raw(root)) == 3


def test_a_second_writer_is_refused(root: Path) -> None:
    with Store(root):
        with pytest.raises(StoreLocked, match=str(os.getpid())):
            Store(root)
        with pytest.raises(StoreLocked):
            compact(root)
    with Store(root):
        pass


def test_a_second_writer_is_refused_after_the_lock_file_is_removed(root: Path) -> None:
    # Issue 13, item 7: the lock must not depend on a path that can be unlinked.
    with Store(root) as first:
        (root / "_lock").unlink()
        with pytest.raises(StoreLocked, match="being written by another process"):
            Store(root)
        (root / "_lock").unlink(missing_ok=True)
        (root / "_lock").write_text("not a pid\n")
        with pytest.raises(StoreLocked):
            compact(root)
        assert first.append(minutes(JAN_2024, 2)) == 2  # the holder goes on writing
    with Store(root) as again:  # released on close
        assert again.last_open_time(*BTC_1M) == JAN_2024 + MINUTE


def test_a_symlinked_landing_directory_is_refused(root: Path, tmp_path: Path) -> None:
    with Store(root) as store:
        store.append(minutes(JAN_2024, 2))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.rmdir(root / "_landing")
    (root / "_landing").symlink_to(elsewhere)
    with pytest.raises(StoreError, match="symbolic link"):
        Store(root)
    assert os.listdir(elsewhere) == []


def test_leftovers_of_a_crash_are_cleaned_at_open(root: Path) -> None:
    with Store(root) as store:
        store.append(minutes(JAN_2024, 3))
    (series_path(root) / ".2024-01_000000000002-000000000002.parquet.tmp").write_bytes(b"half a file")
    (root / "_landing" / ".000000000002.parquet.tmp").write_bytes(b"half a file")
    (root / "._journal.json.tmp").write_bytes(b"{")
    (series_path(root) / "notes.txt").write_text("mine")  # not ours: left alone
    with Store(root):
        pass
    assert sorted(os.listdir(series_path(root))) == ["2024-01_000000000001-000000000001.parquet", "notes.txt"]
    assert landing(root) == [] and not (root / "._journal.json.tmp").exists()


def test_a_damaged_journal_is_moved_aside(root: Path, caplog: pytest.LogCaptureFixture) -> None:
    with Store(root) as store:
        store.append(minutes(JAN_2024, 3))
    (root / "_journal.json").write_text(json.dumps({"version": 1, "renames": [["../../x", "../../y"]]}))
    with caplog.at_level(logging.ERROR, logger="trio_klines.store"), Store(root):
        pass
    assert "unreadable journal" in caplog.text
    assert (root / "_journal.json.corrupt").exists() and not (root / "_journal.json").exists()
    assert len(stored(root)) == 3


def test_invalid_candles_write_nothing(store: Store, root: Path) -> None:
    with pytest.raises(InvalidCandles, match="off the grid"):
        store.append([*minutes(JAN_2024, 3), candle(JAN_2024 + 1)])
    with pytest.raises(InvalidCandles, match="upper-case"):
        store.append([candle(JAN_2024, symbol="btcusdt")])
    assert landing(root) == [] and not (root / "market=spot").exists()
    assert store.append([]) == 0 and landing(root) == []
    assert store.series() == []


def test_the_store_api_is_closed_after_close(root: Path) -> None:
    store = Store(root)
    store.close()
    store.close()
    for call in (lambda: store.append(minutes(JAN_2024, 1)), store.seal, store.seal_due, store.compact, store.series):
        with pytest.raises(StoreError, match="closed"):
            call()
    with pytest.raises(StoreError, match="no store"):
        Store(root / "missing", create=False)
    with pytest.raises(StoreError, match="no store"):
        compact(root / "missing")
    with pytest.raises(ValueError, match="seal_seconds"):
        Store(root, seal_seconds=0)


def test_store_errors_share_the_root() -> None:
    for error in (StoreError, StoreLocked, StoreWriteError, CorruptFile, InvalidCandles):
        assert issubclass(error, KlinesError)
    assert issubclass(StoreWriteError, OSError) and issubclass(InvalidCandles, ValueError)


# --- pyarrow's errors, mapped where the store builds its files ----------------------------------


def fail_once(monkeypatch: pytest.MonkeyPatch, module: types.ModuleType, name: str) -> list[str]:
    """Make ``module.name`` raise pyarrow's ArrowInvalid at its next call only; the calls are listed."""
    real, calls = getattr(module, name), list[str]()

    def flaky(*args: object, **kwargs: object) -> object:
        calls.append(name)
        if len(calls) == 1:
            raise pa.lib.ArrowInvalid("simulated pyarrow failure")
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, flaky)
    return calls


@pytest.mark.parametrize(
    ("module", "name"),
    [
        (trio_klines.store.landing, "candles_to_table"),
        (trio_klines.store.dataset, "serialize_landing"),
    ],
    ids=["building the table", "serializing the landing file"],
)
def test_a_pyarrow_failure_while_building_a_batch_is_a_store_error_and_the_batch_can_be_retried(
    root: Path, monkeypatch: pytest.MonkeyPatch, module: types.ModuleType, name: str
) -> None:
    # ArrowInvalid is a ValueError: let through, the writer took it for a refused batch and dropped it.
    with Store(root) as store:
        store.append(minutes(JAN_2024, 5))
        batch = minutes(JAN_2024 + 5 * MINUTE, 50) + minutes(JAN_2024, 3, symbol="ETHUSDT")
        calls = fail_once(monkeypatch, module, name)
        with pytest.raises(StoreError, match="simulated pyarrow failure") as caught:
            store.append(batch)
        assert calls[0] == name
        assert not isinstance(caught.value, ValueError | pa.lib.ArrowException | InvalidCandles)
        assert isinstance(caught.value.__cause__, pa.lib.ArrowInvalid)
        assert len(stored(root)) == 5  # nothing of the batch
        assert store.append(batch) == 53  # the caller kept its batch: the retry stores it
    assert len(stored(root)) == 55
    assert len(stored(root, ETH_1M)) == 3


@pytest.mark.parametrize("name", ["merge_tables", "serialize", "split_by_series"])
def test_a_round_that_pyarrow_fails_is_counted_and_done_later(
    root: Path, now: list[float], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, name: str
) -> None:
    with Store(root, ops=FAST, clock=lambda: now[0]) as store:
        store.append(minutes(JAN_2024, 4, 0.0))
        store.seal()  # a segment, for the next round to merge into
        for i in range(4, 8):
            store.append([candle(JAN_2024 + i * MINUTE, float(i))], seal=False)
        now[0] = SEAL
        calls = fail_once(monkeypatch, trio_klines.store.dataset, name)
        with caplog.at_level(logging.ERROR, logger="trio_klines.store"):
            store.seal_due()  # raises nothing: a failed round is logged and left for later
        assert calls and store.seal_errors == 1
        assert "simulated pyarrow failure" in caplog.text
        assert store.compact().errors == ()
    assert len(files(root)) == 1 and landing(root) == []
    assert stored(root) == {JAN_2024 + i * MINUTE: float(i) for i in range(8)}


def unfit(field: str, value: object) -> Candle:
    return msgspec.structs.replace(candle(JAN_2024 + 2 * MINUTE), **{field: value})


@pytest.mark.parametrize(
    "bad",
    [unfit("trade_num", 2**63), unfit("open", "1.5"), unfit("open", None)],
    ids=["an int beyond int64", "a string for a price", "no price"],
)
def test_a_candle_that_does_not_fit_its_column_refuses_the_batch(store: Store, root: Path, bad: Candle) -> None:
    # The same batch would fail again: refused (dropped by the writer), not a store failure to retry.
    with pytest.raises(InvalidCandles, match="does not fit the store's columns") as caught:
        store.append([*minutes(JAN_2024, 2), bad, *minutes(JAN_2024 + 3 * MINUTE, 40)])
    assert repr(bad) in str(caught.value)
    assert landing(root) == [] and not (root / "market=spot").exists()
