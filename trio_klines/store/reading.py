"""Reading a series back: sorted, one row per open time, whatever the compaction state. No lock taken.

Safe while a recorder writes the same root: files are immutable and appear complete, and a file that
a merge removes between listing and reading makes the read start over.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Final, TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa

from ..core.markets import Series, series
from ..errors import ConfigError, StoreError
from .compaction import merge_tables, open_times
from .fileops import FileOps
from .layout import FileName, period_bounds, series_dir
from .periodfiles import live_files, read_file, read_footer, refuse_links, with_quarantine
from .tables import SCHEMA, table_to_dataframe

__all__ = ["TimeLike", "last_open_time", "load", "read_series", "retrying", "to_ms"]

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
) -> pd.DataFrame:
    """The stored candles of one series as the seed-shaped DataFrame, sorted, one row per open time.

    The index is ``candle_end_time`` (UTC); rows are those with ``start <= candle_begin_time < end``.
    A series with nothing stored gives an empty frame. A corrupt file is moved to quarantine (error
    logged) and its rows are missing from the result, as :func:`~trio_klines.store.coverage.coverage` shows.

    Raises :class:`~trio_klines.errors.ConfigError` for a bad market, symbol, interval or time,
    :class:`~trio_klines.store.dataset.StoreError` if ``root`` is not a directory, a file cannot be read (``EIO``)
    or the series' directory is a symbolic link (never followed).
    """
    key = series(market, symbol, interval)
    return table_to_dataframe(read_series(root, key, to_ms(start, "start"), to_ms(end, "end")), key.interval)


def read_series(
    root: str | os.PathLike[str], key: Series, start: int | None = None, end: int | None = None
) -> pa.Table:
    """The rows of ``key`` with ``start <= open time < end`` (ms) as a table in the store's schema.

    Raises as :func:`load`.
    """
    root = _existing(root)
    directory = root.joinpath(*series_dir(key))
    refuse_links(root, directory)
    return retrying(key, directory, functools.partial(_read_once, root, directory, key, start, end))


def _read_once(root: Path, directory: Path, key: Series, start: int | None, end: int | None) -> pa.Table:
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
            table = with_quarantine(root, ops, functools.partial(read_file, directory / str(name), key, name))
            if table is not None:
                tables.append(table)
        if tables:
            parts.append(merge_tables(tables))
    table = pa.concat_tables(parts) if parts else SCHEMA.empty_table()
    times = open_times(table)
    lo = 0 if start is None else int(np.searchsorted(times, start, "left"))
    hi = times.size if end is None else int(np.searchsorted(times, end, "left"))
    return table.slice(lo, max(hi - lo, 0))


def last_open_time(root: str | os.PathLike[str], market: str, symbol: str, interval: str) -> int | None:
    """Open time (ms) of the newest stored candle of the series, or ``None``, from file footers only.

    No lock is taken: usable while a recorder writes. A corrupt file is quarantined and skipped.
    Raises as :func:`load`.
    """
    key = series(market, symbol, interval)
    root = _existing(root)
    directory = root.joinpath(*series_dir(key))
    refuse_links(root, directory)
    return retrying(key, directory, functools.partial(_newest, root, directory, key))


def _newest(root: Path, directory: Path, key: Series) -> int | None:
    names = live_files(directory)
    ops = FileOps()
    # Newest period first; an older one only matters if every file of the newer one is corrupt.
    for period in sorted({name.period for name in names}, reverse=True):
        lasts = []
        for name in names:
            if name.period == period:
                info = with_quarantine(root, ops, functools.partial(read_footer, directory / str(name), key, name))
                if info is not None:
                    lasts.append(info.last)
        if lasts:
            return max(lasts)
    return None


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
