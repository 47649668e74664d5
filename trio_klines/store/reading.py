"""Reading a series back exactly: sorted, one row per open time, the sealed files and the landing files
not sealed yet together (the later write winning). No lock taken.

Safe while a recorder writes the same root: files appear complete and are replaced whole; the landing
files are listed before the series' files are read, so a round that seals some in between leaves its
rows in one place or both (counted once), and a landing file removed after the listing makes the read
start over.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Final, TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa

from ..core.markets import Series, series
from ..errors import ConfigError, CorruptFile, StoreError
from .compaction import merge_tables, open_times
from .fileops import FileOps
from .landing import list_landing, read_landing, split_by_series
from .layout import FileName, period_bounds, series_dir
from .marker import dataset_numbers
from .periodfiles import iter_series_dirs, live_files, read_file, read_footer, refuse_links, with_quarantine
from .tables import SERIES_COLUMNS, schema_for, table_to_dataframe

__all__ = [
    "TimeLike",
    "landing_rows",
    "landing_snapshot",
    "last_open_time",
    "load",
    "read_series",
    "retrying",
    "scan",
    "to_ms",
]

logger = logging.getLogger("trio_klines.store")

#: What ``start`` and ``end`` accept: ms since the epoch, or anything :class:`pandas.Timestamp` takes
#: (a naive time is UTC).
TimeLike = int | str | datetime | pd.Timestamp | np.datetime64
_READ_ATTEMPTS: Final = 5
_T = TypeVar("_T")


def load(
    root: str | os.PathLike[str],
    market: str,
    symbol: str,
    interval: str,
    start: TimeLike | None = None,
    end: TimeLike | None = None,
    *,
    exact: bool = False,
) -> pd.DataFrame:
    """The stored candles of one series as the seed-shaped DataFrame, sorted, one row per open time.

    The index is ``candle_end_time`` (UTC); rows are those with ``start <= candle_begin_time < end``.
    Prices and volumes are float64 (a dataset of exact numbers gives the float nearest each decimal, as
    ``float(text)`` does); with ``exact``, from a dataset of exact numbers only, they are the decimals
    as stored, ``pd.ArrowDtype(pa.decimal128(30, 12))`` columns.
    A series with nothing stored gives an empty frame. A corrupt file is moved to quarantine (error
    logged) and its rows are missing from the result, as :func:`~trio_klines.store.coverage.coverage` shows.

    Raises :class:`~trio_klines.errors.ConfigError` for a bad market, symbol, interval or time, and for
    ``exact`` on a dataset of float numbers; :class:`~trio_klines.store.dataset.StoreError` if ``root`` is
    not a directory, a file cannot be read (``EIO``) or the series' directory is a symbolic link (never
    followed).
    """
    key = series(market, symbol, interval)
    lo, hi = to_ms(start, "start"), to_ms(end, "end")
    path = _existing(root)
    numbers = dataset_numbers(path)
    if exact and numbers != "exact":
        raise ConfigError(f"the store at {root} holds {numbers} numbers: exact=True reads a dataset recorded "
                          "with numbers = \"exact\"")  # fmt: skip
    return table_to_dataframe(_read_series(path, key, lo, hi, numbers), key.interval, exact=exact)


def read_series(
    root: str | os.PathLike[str], key: Series, start: int | None = None, end: int | None = None
) -> pa.Table:
    """The rows of ``key`` with ``start <= open time < end`` (ms) as a table in the dataset's schema
    (:func:`~trio_klines.store.tables.schema_for` its numbers).

    Raises as :func:`load`.
    """
    path = _existing(root)
    return _read_series(path, key, start, end, dataset_numbers(path))


def _read_series(root: Path, key: Series, start: int | None, end: int | None, numbers: str) -> pa.Table:
    directory = root.joinpath(*series_dir(key))
    refuse_links(root, directory)
    read = functools.partial(_read_once, root, directory, key, start, end, None, numbers)
    return retrying(key, directory, read)


def _read_once(
    root: Path,
    directory: Path,
    key: Series,
    start: int | None,
    end: int | None,
    landed: Mapping[Series, pa.Table] | None,
    numbers: str,
) -> pa.Table:
    paths = list_landing(root) if landed is None else []  # before the series' files: see the module's docstring
    table = _sealed_rows(root, directory, key, start, end, schema_for(numbers))
    extra = (landing_rows(paths, numbers) if landed is None else landed).get(key)
    if extra is None or extra.num_rows == 0:
        return table
    extra = _between(extra, start, end)
    return merge_tables([table, extra]) if table.num_rows else extra


def _sealed_rows(
    root: Path, directory: Path, key: Series, start: int | None, end: int | None, schema: pa.Schema
) -> pa.Table:
    by_period: dict[str, list[FileName]] = {}
    for name in live_files(directory):
        by_period.setdefault(name.period, []).append(name)
    ops = FileOps()
    parts = []
    for period, group in sorted(by_period.items()):
        first, after = period_bounds(key.interval, period)
        if (end is not None and first >= end) or (start is not None and after <= start):
            continue
        tables = []
        for name in group:
            read = functools.partial(read_file, directory / str(name), key, name, schema=schema)
            table = with_quarantine(root, ops, read)
            if table is not None:
                tables.append(table)
        if tables:
            parts.append(merge_tables(tables))
    table = pa.concat_tables(parts) if parts else schema.empty_table()
    return _between(table, start, end)


def _between(table: pa.Table, start: int | None, end: int | None) -> pa.Table:
    times = open_times(table)
    lo = 0 if start is None else int(np.searchsorted(times, start, "left"))
    hi = times.size if end is None else int(np.searchsorted(times, end, "left"))
    return table.slice(lo, max(hi - lo, 0))


_warned: set[Path] = set()


def landing_rows(paths: Iterable[tuple[int, Path]], numbers: str = "float") -> dict[Series, pa.Table]:
    """The rows of the landing files ``paths`` (from :func:`~trio_klines.store.landing.list_landing`) of a
    dataset of ``numbers`` by series, sorted, one per open time, the later file winning.

    A corrupt landing file is skipped with an error logged (once): the writer moves it to quarantine,
    and its rows show as missing. Raises :class:`FileNotFoundError` if one was sealed and removed since
    it was listed (read again), another :class:`OSError` if one cannot be read (``EIO``).
    """
    tables = []
    for _, path in paths:
        try:
            tables.append(read_landing(path, numbers=numbers))
        except CorruptFile as exc:
            if path not in _warned:
                _warned.add(path)
                logger.error("skipping corrupt landing file %s: %s", path, exc.reason)
    return split_by_series(tables)


def scan(
    root: str | os.PathLike[str],
    *,
    market: str | Iterable[str] | None = None,
    symbol: str | Iterable[str] | None = None,
    interval: str | Iterable[str] | None = None,
    start: TimeLike | None = None,
    end: TimeLike | None = None,
    columns: Sequence[str] | None = None,
) -> pa.RecordBatchReader:
    """Every stored candle of the selected series, lazily: a stream of record batches, series after
    series (sorted), each sorted by open time with one row per open time, as :func:`load` sees it.

    Rows carry ``market``, ``symbol`` and ``interval`` besides the store's columns (or ``columns``, in
    that order); prices and volumes are float64, or ``decimal128(30, 12)`` in a dataset of exact numbers.
    Memory holds one series at a time, so it reads stores larger than memory; the landing files (a few
    minutes of rows) are read when it is called, the series' files as the stream reaches them. With
    pyarrow: ``scan(...).read_all()``; pandas: ``.read_pandas()``; polars: ``pl.from_arrow(scan(...))``;
    DuckDB queries it as a table.

    Raises :class:`~trio_klines.errors.ConfigError` for a bad name, time or column,
    :class:`~trio_klines.store.dataset.StoreError` if ``root`` is not a directory or a file cannot be read.
    """
    path = _existing(root)
    numbers = dataset_numbers(path)
    stored = schema_for(numbers)
    wanted = [_choice(market, "market"), _choice(symbol, "symbol"), _choice(interval, "interval")]
    names = [*SERIES_COLUMNS, *stored.names] if columns is None else list(columns)
    unknown = [c for c in names if c not in SERIES_COLUMNS and c not in stored.names]
    if unknown:
        raise ConfigError(f"unknown column(s) {unknown}: choose among {[*SERIES_COLUMNS, *stored.names]}")
    lo, hi = to_ms(start, "start"), to_ms(end, "end")
    landed = landing_snapshot(path, numbers)
    keys = {key for key, _ in iter_series_dirs(path)} | set(landed)
    selected = sorted(k for k in keys if all(w is None or v in w for w, v in zip(wanted, k, strict=True)))
    fields = [pa.field(name, pa.string(), nullable=False) for name in SERIES_COLUMNS] + list(stored)
    schema = pa.schema([next(f for f in fields if f.name == name) for name in names])

    def batches() -> Iterator[pa.RecordBatch]:
        for key in selected:
            directory = path.joinpath(*series_dir(key))
            refuse_links(path, directory)
            read = functools.partial(_read_once, path, directory, key, lo, hi, landed, numbers)
            table = retrying(key, directory, read)
            if table.num_rows == 0:
                continue
            for name, value in zip(SERIES_COLUMNS, key, strict=True):
                column = pa.array([value] * table.num_rows, pa.string())
                table = table.append_column(pa.field(name, pa.string(), nullable=False), column)
            yield from table.select(names).cast(schema).to_batches()

    return pa.RecordBatchReader.from_batches(schema, batches())


def _choice(value: str | Iterable[str] | None, what: str) -> frozenset[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return frozenset([value])
    chosen = frozenset(value)
    if not all(isinstance(v, str) for v in chosen):
        raise ConfigError(f"{what} must be a name or names, not {value!r}")
    return chosen


def landing_snapshot(root: Path, numbers: str | None = None) -> dict[Series, pa.Table]:
    """:func:`landing_rows` of every landing file under ``root`` (a dataset of ``numbers``, by default those
    recorded), listed again if one is sealed meanwhile.

    Raises :class:`~trio_klines.store.dataset.StoreError` if they cannot be read.
    """
    numbers = dataset_numbers(root) if numbers is None else numbers
    for _ in range(_READ_ATTEMPTS):
        try:
            return landing_rows(list_landing(root), numbers)
        except FileNotFoundError:  # sealed since the listing: list again
            continue
        except OSError as exc:
            raise StoreError(f"cannot read the landing files under {root}: {exc}") from exc
    raise StoreError(f"the landing files under {root} kept changing while being read; try again")


def last_open_time(root: str | os.PathLike[str], market: str, symbol: str, interval: str) -> int | None:
    """Open time (ms) of the newest stored candle of the series, or ``None``, from file footers only.

    No lock is taken: usable while a recorder writes. A corrupt file is quarantined and skipped.
    Raises as :func:`load`.
    """
    key = series(market, symbol, interval)
    root = _existing(root)
    directory = root.joinpath(*series_dir(key))
    refuse_links(root, directory)
    return retrying(key, directory, functools.partial(_newest, root, directory, key, dataset_numbers(root)))


def _newest(root: Path, directory: Path, key: Series, numbers: str) -> int | None:
    paths = list_landing(root)
    names = live_files(directory)
    ops = FileOps()
    sealed = None
    # Newest period first; an older one only matters if every file of the newer one is corrupt.
    for period in sorted({name.period for name in names}, reverse=True):
        lasts = []
        for name in names:
            if name.period == period:
                read = functools.partial(read_footer, directory / str(name), key, name, schema=schema_for(numbers))
                info = with_quarantine(root, ops, read)
                if info is not None:
                    lasts.append(info.last)
        if lasts:
            sealed = max(lasts)
            break
    landed = landing_rows(paths, numbers).get(key)
    pending = int(open_times(landed)[-1]) if landed is not None and landed.num_rows else None
    if sealed is None or pending is None:
        return pending if sealed is None else sealed
    return max(sealed, pending)


def retrying(key: Series, directory: Path, read: Callable[[], _T]) -> _T:
    """``read()``, again if a file it listed vanished (a merge replaced it); OS errors become
    :class:`~trio_klines.store.dataset.StoreError`."""
    for _ in range(_READ_ATTEMPTS):
        try:
            return read()
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise StoreError(f"cannot read {key} under {directory}: {exc}") from exc
    raise StoreError(f"{key}: files under {directory} kept changing while being read; try again")


def _existing(root: str | os.PathLike[str]) -> Path:
    path = Path(root)
    if not path.is_dir():
        raise StoreError(f"no store at {path}")
    return path


def to_ms(value: TimeLike | None, what: str = "time") -> int | None:
    """``value`` as ms since the epoch (UTC), rounded up so that a bound between candles excludes none.

    Raises :class:`~trio_klines.errors.ConfigError` for what is not a time.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise ConfigError(f"{what} must be a time, not {value!r}")
    if isinstance(value, int | np.integer):
        return int(value)
    try:
        stamp = pd.Timestamp(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{what} {value!r} is not a time") from exc
    if pd.isna(stamp):
        raise ConfigError(f"{what} must be a time, not {value!r}")
    if stamp.tzinfo is None:
        stamp = stamp.tz_localize("UTC")
    nanos = stamp.as_unit("ns").value
    return -(-nanos // 1_000_000)
