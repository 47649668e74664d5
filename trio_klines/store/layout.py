"""Where the store puts things: partition directories, periods and file names. Pure: no I/O.

A store root looks like this::

    ROOT/
      market=spot/interval=1m/symbol=BTCUSDT/
        2024-01_000000000001-000000000057.parquet    compacted: appends 1 to 57 of this series
        2024-02_000000000058-000000000058.parquet    one append
        .2024-02_000000000059-000000000059.parquet.tmp   being written (hidden from readers)
      market=spot/interval=1%4D/symbol=BTCUSDT/...   the month interval ``1M``, see below
      _quarantine/...                                  files found corrupt, moved aside, never deleted
      _journal.json                                    an append being committed (exists for an instant)
      _lock                                            the pid of the one process writing (its lock is on ROOT)

pyarrow and pandas skip names starting with ``.`` or ``_``; the glob
``ROOT/market=*/interval=*/symbol=*/*.parquet`` (DuckDB, polars) matches period files only.

**Periods.** Every file holds the candles of one series opening within one calendar *period* (UTC): a
day, a month or a year, the longest whose candle count stays at most :data:`MAX_ROWS_PER_FILE`
(``1s`` → day, ``1m`` ``3m`` ``5m`` → month, ``15m`` and longer → year).

**Sequence numbers.** Each append takes the next number of its series; a file name carries the range of
appends it holds (``lo-hi``: a compacted file spans the appends it merged). Among files of one period,
a higher ``hi`` is a later write, and the later write wins on a repeated open time. Numbers come from
the names on disk, so they survive restarts.

**Case.** ``1m`` (minute) and ``1M`` (month) must not share a directory on case-insensitive file
systems (macOS, Windows), so ``1M`` is written ``1%4D``: Hive partition values are URI-encoded, and
pyarrow, pandas and DuckDB (tested) decode it back to ``1M``, as recent polars does; a reader that
does not decode shows ``1%4D``, still distinct from ``1m``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Final, Literal, NamedTuple

import numpy as np

from ..core.markets import DAY, INTERVALS, Series, get_market, normalize_symbol, series, validate_interval
from ..errors import ConfigError

__all__ = [
    "JOURNAL_NAME",
    "LOCK_NAME",
    "MAX_ROWS_PER_FILE",
    "PERIOD_UNITS",
    "QUARANTINE_DIR",
    "FileName",
    "PeriodUnit",
    "is_temp_name",
    "key_series",
    "parse_series_dir",
    "period_bounds",
    "period_of",
    "period_unit",
    "periods_of",
    "series_dir",
    "series_key",
    "temp_name",
]

#: The most candles one period file may hold (a day of ``1s`` is 86,400).
MAX_ROWS_PER_FILE: Final = 100_000
QUARANTINE_DIR: Final = "_quarantine"
JOURNAL_NAME: Final = "_journal.json"
LOCK_NAME: Final = "_lock"
_TEMP_SUFFIX: Final = ".tmp"
_SEQ_DIGITS: Final = 12

PeriodUnit = Literal["day", "month", "year"]
# Longest possible period of each unit, for the rule below.
_UNIT_MS: Final[Mapping[PeriodUnit, int]] = {"year": 366 * DAY, "month": 31 * DAY, "day": DAY}
# The ``1M`` and ``1w`` candles opening within the longest year and month.
_CALENDAR_COUNTS: Final[Mapping[str, Mapping[PeriodUnit, int]]] = {
    "1M": {"year": 12, "month": 1, "day": 1},
    "1w": {"year": 53, "month": 5, "day": 1},
}


def _choose_unit(interval: str) -> PeriodUnit:
    for unit in ("year", "month", "day"):
        counts = _CALENDAR_COUNTS.get(interval)
        rows = counts[unit] if counts else _UNIT_MS[unit] // (INTERVALS[interval] or 1)
        if rows <= MAX_ROWS_PER_FILE:
            return unit
    raise AssertionError(f"no period holds {interval} within {MAX_ROWS_PER_FILE} rows")  # pragma: no cover


#: Interval → the calendar unit of its period files (the rule above, computed once).
PERIOD_UNITS: Final[Mapping[str, PeriodUnit]] = {interval: _choose_unit(interval) for interval in INTERVALS}

_PERIOD_RE: Final[Mapping[PeriodUnit, re.Pattern[str]]] = {
    "year": re.compile(r"\d{4}"),
    "month": re.compile(r"\d{4}-\d{2}"),
    "day": re.compile(r"\d{4}-\d{2}-\d{2}"),
}
_SEQ_RE: Final = rf"(\d{{{_SEQ_DIGITS}}})"
_FILE_RE: Final = re.compile(rf"(\d{{4}}(?:-\d{{2}}(?:-\d{{2}})?)?)_{_SEQ_RE}-{_SEQ_RE}\.parquet")
_NUMPY_UNIT: Final[Mapping[PeriodUnit, str]] = {"year": "Y", "month": "M", "day": "D"}
_NAME_LENGTH: Final[Mapping[PeriodUnit, int]] = {"year": 4, "month": 7, "day": 10}


def period_unit(interval: str) -> PeriodUnit:
    """The period unit of ``interval``'s files; ``KeyError`` for an unknown interval."""
    return PERIOD_UNITS[interval]


def period_of(interval: str, open_time: int) -> str:
    """Name of the period holding the candle opening at ``open_time`` (``2024``, ``2024-01``, ``2024-01-05``)."""
    unit = PERIOD_UNITS[interval]
    return datetime.fromtimestamp(open_time / 1000, UTC).date().isoformat()[: _NAME_LENGTH[unit]]


def periods_of(interval: str, open_times: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Periods of many open times at once: ``(keys, names)``.

    ``keys`` is an int64 array, one per open time, that orders and groups like the period names;
    ``names[i]`` is the name of ``np.unique(keys)[i]``.
    """
    unit = PERIOD_UNITS[interval]
    keys = open_times.astype("datetime64[ms]").astype(f"datetime64[{_NUMPY_UNIT[unit]}]")
    names = [str(k)[: _NAME_LENGTH[unit]] for k in np.unique(keys)]
    return keys.astype(np.int64), names


@functools.lru_cache(maxsize=4096)  # called for every file read; a handful of periods are live at a time
def period_bounds(interval: str, name: str) -> tuple[int, int]:
    """``[start, end)`` of the period ``name`` of ``interval``, in ms; ``ValueError`` if malformed."""
    unit = PERIOD_UNITS[interval]
    if not _PERIOD_RE[unit].fullmatch(name):
        raise ValueError(f"{name!r} is not a {unit} period")
    start = np.datetime64(name, _NUMPY_UNIT[unit])
    return _ms(start), _ms(start + 1)


def _ms(moment: np.datetime64) -> int:
    return int(moment.astype("datetime64[ms]").astype(np.int64))


class FileName(NamedTuple):
    """A period file's name: the period and the range of appends ``[lo, hi]`` it holds."""

    period: str
    lo: int
    hi: int

    def __str__(self) -> str:
        return f"{self.period}_{self.lo:0{_SEQ_DIGITS}d}-{self.hi:0{_SEQ_DIGITS}d}.parquet"

    @classmethod
    def parse(cls, name: str) -> FileName | None:
        """The parts of a period file's name, or ``None`` for any other name."""
        match = _FILE_RE.fullmatch(name)
        if match is None:
            return None
        lo, hi = int(match[2]), int(match[3])
        return cls(match[1], lo, hi) if lo <= hi else None

    def contains(self, other: FileName) -> bool:
        """Whether ``other`` is a file this one was merged from (same period, appends within ours)."""
        return other != self and other.period == self.period and self.lo <= other.lo and other.hi <= self.hi


def temp_name(name: str) -> str:
    """Where ``name`` is written before it is renamed into place: hidden from every reader."""
    return f".{name}{_TEMP_SUFFIX}"


def is_temp_name(name: str) -> bool:
    return name.startswith(".") and name.endswith(_TEMP_SUFFIX)


def _interval_dirname(interval: str) -> str:
    # The URI encoding of "M" keeps 1M apart from 1m on case-insensitive file systems.
    return interval.replace("M", "%4D")


def series_dir(series: Series) -> tuple[str, str, str]:
    """The partition directories of ``series``, validated again so no unchecked name reaches a path.

    Raises :class:`~trio_klines.errors.ConfigError` for a bad market, symbol or interval.
    """
    market = get_market(series.market)
    symbol = normalize_symbol(series.symbol)
    interval = validate_interval(market, series.interval)
    if symbol != series.symbol:
        # A lower-case symbol would be a second directory for the same series on case-sensitive disks.
        raise ConfigError(f"symbol {series.symbol!r} is not normalized (expected {symbol!r})")
    return f"market={market.name}", f"interval={_interval_dirname(interval)}", f"symbol={symbol}"


def parse_series_dir(market_dir: str, interval_dir: str, symbol_dir: str) -> Series | None:
    """The series a ``market=…/interval=…/symbol=…`` directory holds, or ``None`` if it is not ours."""
    parts = []
    for key, name in (("market", market_dir), ("interval", interval_dir), ("symbol", symbol_dir)):
        prefix = f"{key}="
        if not name.startswith(prefix):
            return None
        parts.append(name[len(prefix) :])
    market, interval, symbol = parts
    found = Series(market, symbol, interval.replace("%4D", "M"))
    try:
        # The round trip rejects every spelling we would not write ourselves (``interval=1M``, ``btcusdt``).
        return found if series_dir(found) == (market_dir, interval_dir, symbol_dir) else None
    except ConfigError:  # a directory someone else made
        return None


def series_key(s: Series) -> str:
    """A series as the ``market/interval/symbol`` key of the store's JSON files (``_meta/``)."""
    return f"{s.market}/{s.interval}/{s.symbol}"


def key_series(key: str) -> Series:
    """The series of a :func:`series_key`; ``ValueError`` or :class:`ConfigError` for anything else."""
    market, interval, symbol = key.split("/")
    return series(market, symbol, interval)
