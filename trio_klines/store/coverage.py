"""What a store holds, per series: first and last open time, rows, and the holes in between.

Reads only the open-time column of each file (about 0.1 s for a million-row series). No lock
taken: safe while a recorder writes the root.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Final

import numpy as np

from ..core.gaps import Gap
from ..core.markets import INTERVALS, Series, next_open_time
from ..errors import StoreError
from .compaction import open_times
from .fileops import FileOps
from .layout import series_dir
from .periodfiles import iter_series_dirs, live_files, read_file, with_quarantine
from .reading import retrying

__all__ = ["SeriesCoverage", "coverage", "gaps_between"]

_TIME_COLUMN: Final = ["candle_begin_time"]


@dataclasses.dataclass(frozen=True, slots=True)
class SeriesCoverage:
    """One series in a store: open times (ms) of its ``first`` and ``last`` candles, its ``rows``, and the
    ``gaps`` between them (``first``/``last`` are ``None`` when nothing is stored)."""

    series: Series
    first: int | None
    last: int | None
    rows: int
    gaps: tuple[Gap, ...]

    @property
    def missing(self) -> int:
        """Candles missing between ``first`` and ``last``."""
        return sum(gap.candles for gap in self.gaps)

    def __str__(self) -> str:
        if self.first is None:
            return f"{self.series}: empty"
        return f"{self.series}: {self.rows} candles from {self.first} to {self.last}, {self.missing} missing"


def coverage(root: str | os.PathLike[str], series: Iterable[Series] | None = None) -> dict[Series, SeriesCoverage]:
    """Coverage of every series under ``root`` (or of the given ones), keyed and sorted by series.

    A corrupt file is moved to quarantine (error logged) and counts as missing. Raises
    :class:`~trio_klines.store.dataset.StoreError` if ``root`` is not a directory or a file cannot be read (``EIO``),
    :class:`~trio_klines.errors.ConfigError` for a bad series.
    """
    root = Path(root)
    if not root.is_dir():
        raise StoreError(f"no store at {root}")
    wanted = sorted(series) if series is not None else [found for found, _ in iter_series_dirs(root)]
    return {key: _series_coverage(root, key) for key in wanted}


def _series_coverage(root: Path, key: Series) -> SeriesCoverage:
    directory = root.joinpath(*series_dir(key))
    times = retrying(key, directory, functools.partial(_stored_times, root, directory, key))
    if times.size == 0:
        return SeriesCoverage(key, None, None, 0, ())
    return SeriesCoverage(key, int(times[0]), int(times[-1]), int(times.size), tuple(gaps_between(key, times)))


def _stored_times(root: Path, directory: Path, key: Series) -> np.ndarray:
    ops = FileOps()
    arrays = []
    for name in live_files(directory):
        read = functools.partial(read_file, directory / str(name), key, name, _TIME_COLUMN)
        table = with_quarantine(root, ops, read)
        if table is not None:
            arrays.append(open_times(table))
    if not arrays:
        return np.empty(0, np.int64)
    # Sort and drop repeats by hand: numpy 2's hash-based np.unique takes a second for a million rows.
    times = np.sort(np.concatenate(arrays), kind="stable")
    keep = np.ones(times.size, dtype=bool)
    keep[1:] = times[1:] != times[:-1]
    return times[keep]


def gaps_between(key: Series, times: np.ndarray) -> list[Gap]:
    """The holes in ``times`` (sorted, unique, on the interval's grid), vectorised.

    Equal to :func:`trio_klines.core.gaps.find_gaps` on the same times, which is a Python loop.
    """
    if times.size < 2:
        return []
    length = INTERVALS[key.interval]
    if length is None:  # 1M: a dozen rows a year, the calendar decides
        return [
            Gap(key, next_open_time(key.interval, a), b)
            for a, b in itertools.pairwise(times.tolist())
            if next_open_time(key.interval, a) < b
        ]
    holes = np.flatnonzero(np.diff(times) > length)
    return [Gap(key, int(times[i]) + length, int(times[i + 1])) for i in holes]
