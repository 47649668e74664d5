"""The Parquet store on a real disk: appends, reads, compaction, coverage, third-party readers, bad files."""

from __future__ import annotations

import errno
import json
import logging
import os
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

import trio_klines.store.batches
import trio_klines.store.dataset
import trio_klines.store.fileops
from trio_klines.core.gaps import Gap
from trio_klines.core.markets import Series
from trio_klines.core.parse import Candle
from trio_klines.errors import ConfigError, KlinesError
from trio_klines.store import periodfiles
from trio_klines.store.compaction import CompactionPolicy
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
)
from trio_klines.store.fileops import FileOps
from trio_klines.store.tables import COLUMNS, candles_to_dataframe

JAN_2024 = 1_704_067_200_000
FEB_2024 = 1_706_745_600_000
MINUTE = 60_000
BTC_1M = Series("spot", "BTCUSDT", "1m")
REPO = Path(__file__).resolve().parents[2]
EPOCH = pd.Timestamp(0, tz="UTC")
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


def files(root: Path, key: Series = BTC_1M) -> list[str]:
    interval = key.interval.replace("M", "%4D")
    return sorted(os.listdir(root.joinpath(f"market={key.market}", f"interval={interval}", f"symbol={key.symbol}")))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def store(root: Path) -> Iterator[Store]:
    with Store(root) as opened:
        yield opened


# --- round trips --------------------------------------------------------------------------------


def test_append_then_load_gives_the_seed_dataframe(store: Store, root: Path) -> None:
    batch = minutes(FEB_2024 - 5 * MINUTE, 10, 100.0)  # across a period boundary
    assert store.append(list(reversed(batch))) == 10
    expected = candles_to_dataframe(batch)
    pd.testing.assert_frame_equal(load(root, "spot", "btcusdt", "1m"), expected)
    assert list(expected.columns) == list(COLUMNS)
    assert str(expected.index.tz) == "UTC" and expected.index.name == "candle_end_time"
    assert files(root) == ["2024-01_000000000001-000000000001.parquet", "2024-02_000000000001-000000000001.parquet"]


def test_later_writes_win_whatever_the_compaction_state(root: Path) -> None:
    with Store(root, policy=CompactionPolicy(auto=False)) as store:
        store.append(minutes(JAN_2024, 10, 1.0))
        store.append([candle(JAN_2024 + 3 * MINUTE, 50.0), candle(JAN_2024 + 12 * MINUTE, 60.0)])
        store.append([candle(JAN_2024 + 3 * MINUTE, 70.0), candle(JAN_2024 + 3 * MINUTE, 80.0)])  # last in batch
        expected = {JAN_2024 + i * MINUTE: 1.0 + i for i in range(10)}
        expected |= {JAN_2024 + 3 * MINUTE: 80.0, JAN_2024 + 12 * MINUTE: 60.0}
        assert stored(root) == expected
        assert len(files(root)) == 3
        summary = store.compact()
        assert (summary.periods_merged, summary.files_before, summary.files_after, summary.rows) == (1, 3, 1, 11)
        assert stored(root) == expected
        assert files(root) == ["2024-01_000000000001-000000000003.parquet"]
    with Store(root) as store:  # the sequence survives the restart: the next write still wins
        store.append([candle(JAN_2024, 90.0)])
        assert store.last_open_time(*BTC_1M) == JAN_2024 + 12 * MINUTE
    assert stored(root) == expected | {JAN_2024: 90.0}
    # It overlapped the compacted file, so it was merged into it at once: raw readers see no repeat.
    assert files(root) == ["2024-01_000000000001-000000000004.parquet"]


def test_load_selects_by_open_time(store: Store, root: Path) -> None:
    store.append(minutes(FEB_2024 - 3 * MINUTE, 6))

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


def test_last_open_time_comes_from_footers(root: Path) -> None:
    with Store(root) as store:
        assert store.last_open_time(*BTC_1M) is None
        store.append(minutes(JAN_2024, 5) + minutes(FEB_2024, 2) + minutes(JAN_2024, 3, symbol="ETHUSDT"))
        store.append([candle(JAN_2024 - 40 * 86_400_000)])  # a late backfill far behind
        assert store.last_open_time(*BTC_1M) == FEB_2024 + MINUTE
    assert last_open_time(root, *BTC_1M) == FEB_2024 + MINUTE  # a reader's view, without the lock
    assert last_open_time(root, "spot", "XRPUSDT", "1m") is None
    with Store(root) as store:
        assert store.last_open_times() == {
            BTC_1M: FEB_2024 + MINUTE,
            Series("spot", "ETHUSDT", "1m"): JAN_2024 + 2 * MINUTE,
        }
        assert store.series() == [BTC_1M, Series("spot", "ETHUSDT", "1m")]


def test_minute_and_month_series_stay_apart(store: Store, root: Path) -> None:
    store.append([*minutes(JAN_2024, 3), candle(JAN_2024, 7.0, interval="1M"), candle(FEB_2024, 8.0, interval="1M")])
    assert sorted(os.listdir(root / "market=spot")) == ["interval=1%4D", "interval=1m"]
    assert stored(root, Series("spot", "BTCUSDT", "1M")) == {JAN_2024: 7.0, FEB_2024: 8.0}
    assert len(stored(root)) == 3


# --- compaction ---------------------------------------------------------------------------------


def test_compaction_makes_one_sorted_unique_file_per_period(root: Path) -> None:
    with Store(root, policy=CompactionPolicy(auto=False), ops=FAST) as store:
        for i in reversed(range(40)):
            store.append([candle(FEB_2024 - 20 * MINUTE + i * MINUTE, float(i)), candle(FEB_2024, 99.0)])
        assert len(files(root)) == 60
        summary = store.compact()
    assert summary.files_after == 2 and summary.errors == () and summary.series == 1
    assert "merged 2 period(s), 60 file(s) into 2" in str(summary)
    for name in files(root):
        table = pq.read_table(root / "market=spot/interval=1m/symbol=BTCUSDT" / name)
        times = table.column("candle_begin_time").cast("int64").to_pylist()
        assert times == sorted(set(times))
    assert stored(root)[FEB_2024] == 99.0  # every batch ends with it, so it beats (FEB_2024, 20.0)
    assert stored(root)[FEB_2024 - 20 * MINUTE] == 0.0
    assert compact(root).periods_merged == 0  # idempotent


def test_automatic_compaction_bounds_files_and_closes_periods(root: Path) -> None:
    with Store(root, ops=FAST) as store:
        for i in range(300):
            store.append([candle(FEB_2024 - 100 * MINUTE + i * MINUTE, float(i))])
    names = files(root)
    january = [n for n in names if n.startswith("2024-01")]
    assert len(january) == 1  # closed, merged whole
    assert len(names) <= 1 + 7 * 3  # at most fan_in - 1 files per tier in the open period
    assert stored(root) == {FEB_2024 - 100 * MINUTE + i * MINUTE: float(i) for i in range(300)}


def test_appending_never_reads_stored_data(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with Store(root, policy=CompactionPolicy(auto=False), ops=FAST) as store:
        store.append(minutes(JAN_2024, 5_000))
        reads: list[object] = []

        def spying(real: Callable[..., object]) -> Callable[..., object]:
            def spy(path: object, *args: object, **kwargs: object) -> object:
                reads.append(path)
                return real(path, *args, **kwargs)

            return spy

        monkeypatch.setattr(periodfiles.pq, "ParquetFile", spying(periodfiles.pq.ParquetFile))
        monkeypatch.setattr(periodfiles.pq, "read_metadata", spying(periodfiles.pq.read_metadata))
        for i in range(50):
            store.append([candle(JAN_2024 + (5_000 + i) * MINUTE)])
    assert reads == []


def test_automatic_compaction_rewrites_each_row_a_few_times(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    written: list[int] = []
    real = trio_klines.store.dataset.serialize

    def spy(table: object, key: Series, **options: bool) -> object:
        written.append(table.num_rows)  # type: ignore[attr-defined]
        return real(table, key, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(trio_klines.store.dataset, "serialize", spy)
    with Store(root, ops=FAST) as store:
        for i in range(1_000):
            store.append([candle(JAN_2024 + i * MINUTE)])
    # log_8(1000) < 4: each row is rewritten a handful of times at most, and no merge takes everything.
    assert sum(written) <= 6 * 1_000
    assert max(written) < 1_000


def test_deferred_compaction_waits_for_compact_due_and_goes_in_steps(root: Path) -> None:
    # The recorder's writer appends with compact=False, reports the batch, then pays for the merges.
    symbols = [f"S{i}USDT" for i in range(4)]
    with Store(root, ops=FAST) as store:
        for i in range(8):
            store.append([candle(JAN_2024 + i * MINUTE, float(i), symbol=s) for s in symbols], compact=False)
        assert all(len(files(root, Series("spot", s, "1m"))) == 8 for s in symbols)  # nothing merged yet
        debt = store.compaction_debt()
        assert debt > 1  # more owed than the last append paid for: a writer catches up before appending
        assert store.compact_due(max_merges=1) > 0
        assert sum(len(files(root, Series("spot", s, "1m"))) == 1 for s in symbols) == 1  # one merge
        assert store.compact_due(max_rows=1) > 0  # at least one merge, however small the budget
        assert sum(len(files(root, Series("spot", s, "1m"))) == 1 for s in symbols) == 2
        assert store.compact_due() == 0.0  # everything owed, then nothing
        assert all(len(files(root, Series("spot", s, "1m"))) == 1 for s in symbols)
        for s in symbols:
            assert stored(root, Series("spot", s, "1m")) == {JAN_2024 + i * MINUTE: float(i) for i in range(8)}


def test_merging_what_this_store_wrote_reads_nothing_back(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[object] = []
    real = trio_klines.store.dataset.read_file

    def spy(path: Path, *args: object, **kwargs: object) -> object:
        reads.append(path)
        return real(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(trio_klines.store.dataset, "read_file", spy)
    with Store(root, ops=FAST) as store:
        for i in range(100):
            store.append([candle(JAN_2024 + i * MINUTE, float(i))])
        assert len(files(root)) < 100  # merged as it went
    assert reads == []  # the small files' tables were still in memory
    assert stored(root) == {JAN_2024 + i * MINUTE: float(i) for i in range(100)}


def test_a_file_a_reader_quarantined_is_not_merged_from_memory(root: Path, caplog: pytest.LogCaptureFixture) -> None:
    with Store(root, ops=FAST, policy=CompactionPolicy(fan_in=2)) as store:
        store.append(minutes(JAN_2024, 3))
        victim = root / "market=spot/interval=1m/symbol=BTCUSDT" / files(root)[0]
        victim.write_bytes(victim.read_bytes()[:-10])
        with caplog.at_level(logging.ERROR, logger="trio_klines.store"):
            assert stored(root) == {}  # the reader moves it to quarantine
        # The store still holds its table in memory, but the file is gone: it must not come back.
        store.append(minutes(JAN_2024 + 3 * MINUTE, 3, 10.0))
        store.append(minutes(JAN_2024 + 6 * MINUTE, 3, 20.0))
    assert sorted(stored(root)) == [JAN_2024 + i * MINUTE for i in range(3, 9)]


# --- readers ------------------------------------------------------------------------------------


def make_mixed_store(root: Path) -> None:
    with Store(root) as store:
        store.append([*minutes(JAN_2024, 5), candle(JAN_2024, 9.0, interval="1M")])
        store.append(minutes(JAN_2024, 2, symbol="ETHUSDT"))
        store.append([Candle("usdt_futures", "BTCUSDT", "1h", JAN_2024, 1.0, 2.0, 0.5, 1.5, 1.0, 1.0, 1, 0.1, 0.1)])
    # Things readers must not trip over: quarantine, temporary and journal files.
    quarantine = root / "_quarantine" / "market=spot"
    quarantine.mkdir(parents=True)
    (quarantine / "2024-01_000000000001-000000000001.parquet.quarantined").write_bytes(b"junk")
    (root / "market=spot/interval=1m/symbol=BTCUSDT/.2024-01_000000000009-000000000009.parquet.tmp").write_bytes(b"x")
    (root / "_journal.json.corrupt").write_bytes(b"{")


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


#: The README's recipe for raw readers: of a repeated open time keep the row of the latest append.
DUCKDB_LATEST = """
SELECT * EXCLUDE (filename, rank) FROM (
    SELECT *, row_number() OVER (
        PARTITION BY market, interval, symbol, candle_begin_time
        ORDER BY regexp_extract(filename, '-(\\d+)\\.parquet$', 1)::BIGINT DESC) AS rank
    FROM read_parquet('{root}/market=*/interval=*/symbol=*/*.parquet', hive_partitioning = true, filename = true)
) WHERE rank = 1
ORDER BY market, interval, symbol, candle_begin_time
"""


def test_duckdb_recipe_for_uncompacted_repeats_agrees_with_load(root: Path) -> None:
    with Store(root, policy=CompactionPolicy(auto=False)) as store:
        store.append(minutes(JAN_2024, 5, 1.0))
        store.append(minutes(JAN_2024 + 2 * MINUTE, 5, 10.0))
        store.append(minutes(JAN_2024 + 3 * MINUTE, 1, 20.0))
    raw = duckdb.sql(f"SELECT count(*) FROM read_parquet('{root}/*/*/*/*.parquet')").fetchall()
    assert raw == [(11,)]  # the repeats are all there until compaction
    rows = duckdb.sql(DUCKDB_LATEST.format(root=root)).fetchall()
    assert [row[1] for row in rows] == list(stored(root).values()) == [1.0, 2.0, 10.0, 20.0, 12.0, 13.0, 14.0]


# --- coverage -----------------------------------------------------------------------------------


def test_coverage_reports_first_last_rows_and_gaps(store: Store, root: Path) -> None:
    store.append(minutes(JAN_2024, 3) + minutes(JAN_2024 + 10 * MINUTE, 2) + minutes(FEB_2024, 1))
    store.append([candle(JAN_2024 + MINUTE, 5.0)])  # a repeat counts once
    store.append([candle(JAN_2024, 1.0, interval="1M"), candle(JAN_2024 + 60 * 86_400_000, 1.0, interval="1M")])
    report = coverage(root)
    minute = report[BTC_1M]
    assert (minute.first, minute.last, minute.rows) == (JAN_2024, FEB_2024, 6)
    assert minute.gaps == (
        Gap(BTC_1M, JAN_2024 + 3 * MINUTE, JAN_2024 + 10 * MINUTE),
        Gap(BTC_1M, JAN_2024 + 12 * MINUTE, FEB_2024),
    )
    assert minute.missing == 7 + (FEB_2024 - JAN_2024) // MINUTE - 12
    month = report[Series("spot", "BTCUSDT", "1M")]
    assert month.gaps == (Gap(month.series, FEB_2024, JAN_2024 + 60 * 86_400_000),) and month.missing == 1
    assert coverage(root, [Series("spot", "XRPUSDT", "1m")])[Series("spot", "XRPUSDT", "1m")].rows == 0


# --- bad things on disk -------------------------------------------------------------------------


def test_a_truncated_file_is_quarantined_at_start_up_not_deleted(root: Path, caplog: pytest.LogCaptureFixture) -> None:
    with Store(root, policy=CompactionPolicy(auto=False)) as store:
        store.append(minutes(JAN_2024, 10))
        store.append(minutes(JAN_2024 + 10 * MINUTE, 10, 50.0))
    victim = root / "market=spot/interval=1m/symbol=BTCUSDT" / files(root)[1]
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
        store.append([candle(JAN_2024 + 20 * MINUTE)])
    assert files(root)[-1] == "2024-01_000000000003-000000000003.parquet"


def test_a_reader_quarantines_a_truncated_file_and_keeps_going(root: Path, caplog: pytest.LogCaptureFixture) -> None:
    with Store(root, policy=CompactionPolicy(auto=False)) as store:
        store.append(minutes(JAN_2024, 10))
        store.append(minutes(JAN_2024 + 10 * MINUTE, 10))
        store.append(minutes(FEB_2024, 10))
        victim = root / "market=spot/interval=1m/symbol=BTCUSDT" / files(root)[0]
        victim.write_bytes(victim.read_bytes()[:-10])
        with caplog.at_level(logging.ERROR, logger="trio_klines.store"):
            assert len(stored(root)) == 20
        assert "corrupt file" in caplog.text
        # The writer's cached view still lists the moved file: its merge of January notices and carries on.
        summary = store.compact()
        assert summary.errors == () and summary.periods_merged == 0
        store.append([candle(FEB_2024 + 10 * MINUTE)])
    assert len(stored(root)) == 21


def test_a_flipped_byte_never_gives_a_wrong_candle(root: Path, caplog: pytest.LogCaptureFixture) -> None:
    with Store(root) as store:
        store.append(minutes(JAN_2024, 200, 1000.0))
    expected = stored(root)
    path = root / "market=spot/interval=1m/symbol=BTCUSDT" / files(root)[0]
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
    root: Path, monkeypatch: pytest.MonkeyPatch, after_bytes: int
) -> None:
    with Store(root) as store:
        store.append(minutes(JAN_2024, 5))
        before = files(root)
        batch = minutes(JAN_2024 + 5 * MINUTE, 50) + minutes(JAN_2024, 3, symbol="ETHUSDT")
        with monkeypatch.context() as patch:
            fail_os_write(patch, errno.ENOSPC, after_bytes)
            with pytest.raises(StoreWriteError) as caught:
                store.append(batch)
        assert caught.value.errno == errno.ENOSPC and not caught.value.committed
        assert "nothing was stored" in str(caught.value)
        assert files(root) == before  # no visible file, no temporary file
        assert not (root / "market=spot/interval=1m/symbol=ETHUSDT").exists() or not os.listdir(
            root / "market=spot/interval=1m/symbol=ETHUSDT"
        )
        assert not [n for n in os.listdir(root) if n.startswith((".", "_journal"))]
        assert len(stored(root)) == 5
        assert store.append(batch) == 53  # the caller kept its batch: the retry stores it
    assert len(stored(root)) == 55


class FailingOps(FileOps):
    """Fails the ``when``-th call of ``operation`` with ``code``."""

    def __init__(self, operation: str, when: int, code: int) -> None:
        super().__init__(durable=False)
        self.operation, self.when, self.code, self.calls = operation, when, code, 0

    def _maybe_fail(self, operation: str, path: Path) -> None:
        if operation == self.operation:
            self.calls += 1
            if self.calls == self.when:
                raise OSError(self.code, os.strerror(self.code), str(path))

    def write(self, path: Path, data: bytes | memoryview) -> None:
        self._maybe_fail("write", path)
        super().write(path, data)

    def rename(self, source: Path, target: Path) -> None:
        self._maybe_fail("rename", source)
        super().rename(source, target)

    def fsync_dir(self, path: Path) -> None:
        self._maybe_fail("fsync_dir", path)
        super().fsync_dir(path)

    def makedirs(self, path: Path) -> None:
        self._maybe_fail("makedirs", path)
        super().makedirs(path)


@pytest.mark.parametrize(
    ("operation", "when", "code", "committed"),
    [
        ("makedirs", 2, errno.EACCES, False),  # the second series' directory
        ("write", 2, errno.EIO, False),  # the second data file
        ("write", 3, errno.ENOSPC, False),  # the journal
        ("rename", 1, errno.EACCES, False),  # the journal's rename: the commit point
        ("fsync_dir", 1, errno.EIO, True),  # syncing that rename
        ("rename", 2, errno.EIO, True),  # a data file after the commit
        ("fsync_dir", 3, errno.EIO, True),  # the last directory
    ],
)
def test_a_failing_write_is_all_or_nothing(root: Path, operation: str, when: int, code: int, committed: bool) -> None:
    eth = Series("spot", "ETHUSDT", "1m")
    ops = FailingOps(operation, 0, code)
    store = Store(root, ops=ops, policy=CompactionPolicy(auto=False))
    store.append([candle(FEB_2024 - 40 * 86_400_000), candle(FEB_2024 - 40 * 86_400_000, symbol="ETHUSDT")])
    ops.calls, ops.when = 0, when
    batch = minutes(JAN_2024, 4, 10.0) + minutes(JAN_2024, 4, 20.0, symbol="ETHUSDT")
    with pytest.raises(StoreWriteError) as caught:
        store.append(batch)
    assert caught.value.errno == code and caught.value.committed is committed
    if committed:  # finished by the next use of the store (or by opening it again)
        assert store.last_open_time(*eth) == JAN_2024 + 3 * MINUTE
        assert len(stored(root)) == 5 and len(stored(root, eth)) == 5
    else:
        assert len(stored(root)) == 1 and len(stored(root, eth)) == 1
        assert store.last_open_time(*eth) == FEB_2024 - 40 * 86_400_000
        assert store.append(batch) == 8
        assert stored(root, eth)[JAN_2024] == 20.0
    store.close()
    assert not [n for _, _, names in os.walk(root) for n in names if n.endswith(".tmp") or n == "_journal.json"]


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


def test_leftovers_of_a_crash_are_cleaned_at_open(root: Path) -> None:
    with Store(root) as store:
        store.append(minutes(JAN_2024, 3))
    series_dir = root / "market=spot/interval=1m/symbol=BTCUSDT"
    (series_dir / ".2024-01_000000000002-000000000002.parquet.tmp").write_bytes(b"half a file")
    (root / "._journal.json.tmp").write_bytes(b"{")
    (series_dir / "notes.txt").write_text("mine")  # not ours: left alone
    with Store(root):
        pass
    assert sorted(os.listdir(series_dir)) == ["2024-01_000000000001-000000000001.parquet", "notes.txt"]
    assert not (root / "._journal.json.tmp").exists()


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
    assert not (root / "market=spot").exists()
    assert store.append([]) == 0


def test_the_store_api_is_closed_after_close(root: Path) -> None:
    store = Store(root)
    store.close()
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.append(minutes(JAN_2024, 1))
    with pytest.raises(StoreError, match="no store"):
        Store(root / "missing", create=False)
    with pytest.raises(StoreError, match="no store"):
        compact(root / "missing")


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
    [(trio_klines.store.batches, "candles_to_table"), (trio_klines.store.dataset, "serialize")],
    ids=["building the table", "serializing a file"],
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
    assert len(stored(root, Series("spot", "ETHUSDT", "1m"))) == 3


def test_a_merge_that_pyarrow_fails_is_counted_and_done_later(
    root: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with Store(root, ops=FAST) as store:
        for i in range(8):
            store.append([candle(JAN_2024 + i * MINUTE, float(i))], compact=False)
        calls = fail_once(monkeypatch, trio_klines.store.dataset, "merge_tables")
        with caplog.at_level(logging.ERROR, logger="trio_klines.store"):
            store.compact_due()  # raises nothing: a failed merge is logged and left for later
        assert calls and store.compaction_errors == 1
        assert "simulated pyarrow failure" in caplog.text
        assert store.compact().errors == ()
    assert len(files(root)) == 1
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
    assert not (root / "market=spot").exists()
