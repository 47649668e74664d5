"""Raw Hive readers (pandas, pyarrow, polars, DuckDB) while the store seals: never a row twice, and no error
for pandas and pyarrow, nor for polars and DuckDB reading through ``trio_klines.scan``.

A writer thread appends and seals in rounds back to back (a fake clock makes each round due at once,
run in small steps as the recorder's writer does): live candles of many series, corrections of stored
open times (sealed, in older periods too) and history before the first stored row. Reader threads
read the whole root meanwhile, each with its own library. The writer runs a fixed number of rounds.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Final

import duckdb
import pandas as pd
import polars as pl
import pyarrow.dataset as ds
import pytest

from trio_klines.core.markets import Series
from trio_klines.core.parse import Candle
from trio_klines.store.dataset import Store, load
from trio_klines.store.fileops import FileOps
from trio_klines.store.landing import list_landing
from trio_klines.store.reading import scan

SEAL_SECONDS: Final = 60.0
ROUNDS: Final = 40
#: A reader stops after this many reads even if the writer is still going: the test's length is bounded.
MAX_READS: Final = 400
JAN_31_2359 = 1_706_745_540_000  # 2024-01-31 23:59 UTC: live minutes cross into February at once
FEB_1 = 1_706_745_600_000
SYMBOLS = [f"S{i:02d}USDT" for i in range(24)]
SERIES: Final = [Series("spot", s, "1m") for s in SYMBOLS] + [
    Series("usdt_futures", "BTCUSDT", "1m"),
    Series("spot", "ETHUSDT", "1M"),
]
KEY: Final = ["market", "interval", "symbol", "candle_begin_time"]
GLOB_TAIL: Final = "market=*/interval=*/symbol=*/*.parquet"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _ms(column: pd.Series) -> pd.Series:
    if pd.api.types.is_integer_dtype(column):
        return column.astype("int64")
    return (column - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1)


def _frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The key columns and ``open``, as plain strings and ms; ``1%4D`` decoded where a reader did not."""
    out = pd.DataFrame(
        {
            "market": frame["market"].astype(str).to_numpy(),
            "interval": frame["interval"].astype(str).str.replace("%4D", "M").to_numpy(),
            "symbol": frame["symbol"].astype(str).to_numpy(),
            "candle_begin_time": _ms(frame["candle_begin_time"]).to_numpy(),
            "open": frame["open"].astype(float).to_numpy(),
        }
    )
    return out


def read_pandas(root: Path) -> pd.DataFrame:
    return _frame(pd.read_parquet(root))


def read_pyarrow(root: Path) -> pd.DataFrame:
    return _frame(ds.dataset(root, partitioning="hive").to_table().to_pandas())


def read_polars(root: Path) -> pd.DataFrame:
    frame = (
        pl.scan_parquet(f"{root}/{GLOB_TAIL}", hive_partitioning=True)
        .select(
            pl.col("market").cast(pl.String),
            pl.col("interval").cast(pl.String),
            pl.col("symbol").cast(pl.String),
            pl.col("candle_begin_time").dt.epoch("ms"),
            pl.col("open"),
        )
        .collect()
    )
    return _frame(pd.DataFrame({name: frame[name].to_list() for name in frame.columns}))


def read_duckdb(root: Path) -> pd.DataFrame:
    with duckdb.connect() as connection:
        query = (
            "SELECT market, interval, symbol, epoch_ms(candle_begin_time) AS candle_begin_time, open "
            "FROM read_parquet(?, hive_partitioning = true)"
        )
        rows = connection.execute(query, [f"{root}/{GLOB_TAIL}"]).fetchall()
    return _frame(pd.DataFrame(rows, columns=["market", "interval", "symbol", "candle_begin_time", "open"]))


SCAN_COLUMNS: Final = ["market", "interval", "symbol", "candle_begin_time", "open"]


def read_polars_scan(root: Path) -> pd.DataFrame:
    """polars through :func:`trio_klines.scan`, the README's way for polars that never fails."""
    frame = pl.from_arrow(scan(root, columns=SCAN_COLUMNS)).with_columns(pl.col("candle_begin_time").dt.epoch("ms"))
    assert isinstance(frame, pl.DataFrame)
    return _frame(pd.DataFrame({name: frame[name].to_list() for name in frame.columns}))


def read_duckdb_scan(root: Path) -> pd.DataFrame:
    """DuckDB querying :func:`trio_klines.scan`'s stream, the README's way for DuckDB that never fails."""
    reader = scan(root, columns=SCAN_COLUMNS)
    with duckdb.connect() as connection:
        connection.register("candles", reader)
        query = "SELECT market, interval, symbol, epoch_ms(candle_begin_time) AS candle_begin_time, open FROM candles"
        rows = connection.execute(query).fetchall()
    return _frame(pd.DataFrame(rows, columns=SCAN_COLUMNS))


READERS: Final[dict[str, Callable[[Path], pd.DataFrame]]] = {
    "pandas": read_pandas,
    "pyarrow": read_pyarrow,
    "polars": read_polars,
    "duckdb": read_duckdb,
    "polars-scan": read_polars_scan,
    "duckdb-scan": read_duckdb_scan,
}


def everything_loaded(root: Path) -> pd.DataFrame:
    """Every series as :func:`load` sees it, in the readers' shape."""
    frames = []
    for key in SERIES:
        frame = load(root, *key)
        frames.append(
            pd.DataFrame(
                {
                    "market": key.market,
                    "interval": key.interval,
                    "symbol": key.symbol,
                    "candle_begin_time": _ms(frame["candle_begin_time"]).to_numpy(),
                    "open": frame["open"].to_numpy(),
                }
            )
        )
    return pd.concat(frames)


def canonical(frame: pd.DataFrame) -> list[tuple[str, str, str, int, float]]:
    return sorted(frame.itertuples(index=False, name=None))


def candle(key: Series, open_time: int, value: float) -> Candle:
    return Candle(*key, open_time, value, value + 1, value - 1, value, 1.0, value, 3, 0.5, 1.0)


def month(index: int) -> int:
    """Open time of the ``index``-th month from 2023-01."""
    year, month_ = divmod(index, 12)
    return int(pd.Timestamp(year=2023 + year, month=month_ + 1, day=1, tz="UTC").value // 1_000_000)


class Writer:
    """Appends and seals ``ROUNDS`` rounds, remembering every open time it wrote."""

    def __init__(self, root: Path, seed: int) -> None:
        self.root = root
        self.random = random.Random(seed)
        self.clock = Clock()
        self.store = Store(root, ops=FileOps(durable=False), clock=self.clock, seal_seconds=SEAL_SECONDS)
        self.value = 0.0
        self.written: dict[Series, list[int]] = {key: [] for key in SERIES}
        self.done = threading.Event()
        self.stop = threading.Event()  # a reader failed: the test is lost, no need to go on
        self.error: BaseException | None = None

    def batch(self, round_: int) -> list[Candle]:
        out = []
        for key in SERIES:
            if key.interval == "1M":
                times = [month(12 + round_)]
            else:
                times = [JAN_31_2359 + round_ * 60_000 * 3 + i * 60_000 for i in range(3)]
            stored = self.written[key]
            if stored:  # corrections of stored open times, in any period
                times += self.random.sample(stored, min(len(stored), 2))
            if key.interval == "1m" and round_ % 10 == 5:  # history before the first stored row
                times += [JAN_31_2359 - (round_ + i) * 60_000 for i in range(1, 4)]
            for t in times:
                self.value += 1
                out.append(candle(key, t, self.value))
                if t not in stored:
                    stored.append(t)
        self.random.shuffle(out)
        return out

    def start(self) -> None:
        """The first round, sealed before the readers start (a raw reader fails on a root with no file)."""
        self.store.append(self.batch(0))
        self.store.seal()

    def run(self) -> None:
        try:
            for round_ in range(1, ROUNDS):
                if self.stop.is_set():
                    break
                self.store.append(self.batch(round_), seal=False)
                self.clock.now += SEAL_SECONDS  # the round is due at once
                while self.store.seal_due(max_files=4) > 0:
                    pass
            self.store.close()
        except BaseException as exc:
            self.error = exc
            raise
        finally:
            self.done.set()


def check_unique(name: str, frame: pd.DataFrame) -> None:
    repeated = frame[frame.duplicated(KEY, keep=False)]
    assert repeated.empty, f"{name} saw open times twice:\n{repeated.head(10)}"


POLARS_REOPENS = pytest.mark.xfail(
    strict=True,
    reason="polars opens a file more than once by path (footer, then row groups by byte range): a segment "
    "replaced by rename-over in between is read with the old file's offsets (ComputeError 'File out of "
    "specification', or a Rust panic 'range.end <= self.size'); segments.py assumes a reader that opened "
    "the old file keeps reading it",
)
# Not strict: DuckDB fails on a small share of reads only (a few percent of them), not in every run.
DUCKDB_REOPENS = pytest.mark.xfail(
    strict=False,
    reason="DuckDB too reopens a file by path within a query: a segment replaced meanwhile fails the read "
    "('TProtocolException: Invalid data', \"don't know what type\") in some runs",
)


def race(root: Path, names: tuple[str, ...], *, tolerate: bool) -> tuple[dict[str, int], list[str]]:
    """The writer's rounds against readers ``names`` looping meanwhile; their reads and errors.

    Every read is checked for repeated open times (an error, whatever ``tolerate``); other errors stop
    the race unless ``tolerate``.
    """
    writer = Writer(root, seed=14)
    writer.start()
    errors: list[str] = []
    reads = dict.fromkeys(names, 0)

    def reader(name: str) -> None:
        read = READERS[name]
        while reads[name] < MAX_READS:
            finished = writer.done.is_set()
            try:
                frame = read(root)
            except BaseException as exc:  # every failure is the test's (polars' panics are BaseExceptions)
                errors.append(f"{name}: {type(exc).__name__}: {exc}")
                if not tolerate:
                    writer.stop.set()
                    return
            else:
                repeated = frame[frame.duplicated(KEY, keep=False)]
                if not repeated.empty:
                    errors.append(f"{name} saw open times twice:\n{repeated.head(10)}")
                    writer.stop.set()
                    return
            reads[name] += 1
            if finished:  # one read after the writer stopped, then done
                return

    threads = [threading.Thread(target=writer.run, name="writer")]
    threads += [threading.Thread(target=reader, args=(name,), name=name) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=90)
        assert not thread.is_alive(), f"{thread.name} did not finish"
    assert writer.error is None
    if not any("twice" in error for error in errors) and not writer.stop.is_set():
        assert list_landing(root) == []
        expected = canonical(everything_loaded(root))
        assert len(expected) == sum(len(times) for times in writer.written.values())
        for name, read in READERS.items():  # all of them, the writer closed
            assert canonical(read(root)) == expected, name
        # Segments stay few: a period holds its live segment, plus one per batch of older history.
        for directory in root.glob("market=*/interval=*/symbol=*"):
            assert len(list(directory.glob("*.parquet"))) <= 2 + ROUNDS // 10, directory
    return reads, errors


@pytest.mark.parametrize(
    "names",
    [
        ("pandas", "pyarrow"),
        ("polars-scan", "duckdb-scan"),
        pytest.param(("polars",), marks=POLARS_REOPENS),
        pytest.param(("duckdb",), marks=DUCKDB_REOPENS),
    ],
    ids=["pandas-pyarrow", "polars-duckdb-through-scan", "polars", "duckdb"],
)
def test_raw_readers_never_fail_nor_see_a_row_twice_while_the_store_seals(
    tmp_path: Path, names: tuple[str, ...]
) -> None:
    reads, errors = race(tmp_path / "data", names, tolerate=False)
    assert errors == []
    assert all(count >= 3 for count in reads.values()), reads  # each read while rounds ran


def test_readers_that_fail_on_a_replaced_file_still_never_see_a_row_twice(tmp_path: Path) -> None:
    # polars and DuckDB fail some reads (above); the reads that succeed hold each open time once.
    reads, errors = race(tmp_path / "data", ("polars", "duckdb"), tolerate=True)
    assert not [error for error in errors if "twice" in error]
    assert all(count >= 3 for count in reads.values()), reads
    assert len(errors) < sum(reads.values()), "no read succeeded"


@pytest.mark.parametrize("seal_between", [False, True], ids=["one-round", "two-rounds"])
def test_the_demo_twice_shows_each_candle_once_with_the_second_values(tmp_path: Path, seal_between: bool) -> None:
    root = tmp_path / "data"
    keys = SERIES[:3] + SERIES[-1:]
    times = {key: [FEB_1 + i * 60_000 if key.interval == "1m" else month(i) for i in range(5)] for key in keys}
    first = [candle(key, t, 10.0 + i) for key in keys for i, t in enumerate(times[key])]
    second = [candle(key, t, 1010.0 + i) for key in keys for i, t in enumerate(times[key])]  # corrected
    with Store(root, ops=FileOps(durable=False)) as store:
        store.append(first)
        if seal_between:
            store.seal()
        store.append(second)
        store.seal()
    expected = canonical(everything_loaded(root))
    assert len(expected) == len(first)
    assert {row[-1] for row in expected} == {c.open for c in second}
    for name, read in READERS.items():
        frame = read(root)
        check_unique(name, frame)
        assert canonical(frame) == expected, name
