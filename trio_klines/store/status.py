"""Per series: what the store holds, what is missing, and what the exchange itself never had.

Candles a quarantined file held count as missing until they are stored again. Rows opening more than
:data:`STORED_AHEAD_MS` after the clock (the local one unless ``now`` is given) cannot be real closed
candles: they are counted apart (``beyond_clock``), and neither end the series nor open a gap before them.

:meth:`SeriesStatus.as_dict` is one series of ``status --json``: every time as ISO-8601 UTC text
(``first_time``…), and as epoch ms under the older keys (``first``…) that scripts may read.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.markets import Series, count_open_times, next_open_time
from ..core.timefmt import iso_ms
from ..core.validity import STORED_AHEAD_MS
from .coverage import coverage
from .ended import read_ended
from .layout import series_dir
from .ledger import ExchangeGapLedger

__all__ = ["SeriesStatus", "now_ms", "store_status"]


def now_ms() -> int:
    """The local clock, ms since the epoch."""
    return int(time.time() * 1000)


@dataclass(frozen=True)
class SeriesStatus:
    series: Series
    first: int | None
    last: int | None
    rows: int
    missing: int  # candles absent between first and last that are not exchange gaps
    exchange_gaps: int  # candles the exchange has no data for, between first and last
    files: int
    quarantined: tuple[str, ...] = ()  # its files in quarantine, relative to the root
    beyond_clock: int = 0  # rows opening after the clock (plus tolerance): not real candles
    beyond_clock_first: int | None = None  # the earliest of them
    ended: int | None = None  # when a universe stopped recording it (delisted, halted), if it did
    ended_why: str | None = None  # the listing status that ended it, or "delisted"

    def lag_ms(self, now: int) -> int | None:
        """How far (ms) the close of the last stored candle (the next one's open time) is behind ``now``;
        ``0`` if it is not (a clock behind the exchange's), ``None`` with nothing stored. A series being
        recorded lags by less than its interval plus the flush delay."""
        if self.last is None:
            return None
        return max(0, now - next_open_time(self.series.interval, self.last))

    def as_dict(self, now: int | None = None) -> dict[str, Any]:
        """One series of ``status --json``; ``lag_seconds`` is taken at ``now`` (ms, default: the local clock).

        Times are epoch ms under ``first``, ``last``, ``beyond_clock_first``, ``ended`` (as before) and
        ISO-8601 UTC text under the same names ending in ``_time``; ``null`` where there is none.
        """
        lag = self.lag_ms(now_ms() if now is None else now)
        return {"market": self.series.market, "symbol": self.series.symbol, "interval": self.series.interval,
                "first": self.first, "last": self.last,
                "first_time": _iso(self.first), "last_time": _iso(self.last),
                "lag_seconds": None if lag is None else lag / 1000,
                "rows": self.rows, "missing": self.missing,
                "exchange_gaps": self.exchange_gaps, "files": self.files, "quarantined": list(self.quarantined),
                "beyond_clock": self.beyond_clock, "beyond_clock_first": self.beyond_clock_first,
                "beyond_clock_first_time": _iso(self.beyond_clock_first),
                "ended": self.ended, "ended_time": _iso(self.ended), "ended_why": self.ended_why}  # fmt: skip


def _iso(ms: int | None) -> str | None:
    return None if ms is None else iso_ms(ms)


def store_status(root: Path, *, now: int | None = None) -> list[SeriesStatus]:
    """Per series: what is stored, what is missing, and what the exchange itself never had.

    ``now`` (ms) is the clock that rows beyond are set aside from (default: the local clock). Raises
    :class:`~trio_klines.errors.StoreError` if ``root`` is not a store or a file cannot be read (``EIO``);
    whatever the files hold, it reports.
    """
    clock = now_ms() if now is None else now
    ledger = ExchangeGapLedger(root)
    ended = read_ended(root)
    out = []
    for key, cov in coverage(root, until=clock + STORED_AHEAD_MS).items():
        known = ledger.ranges(key)
        missing = exchange = 0
        for gap in cov.gaps:
            unexplained = sum(count_open_times(key.interval, lo, hi) for lo, hi in known.missing(gap.start, gap.end))
            missing += unexplained
            exchange += gap.candles - unexplained
        directory = root.joinpath(*series_dir(key))
        files = sum(1 for p in directory.glob("*.parquet") if not p.name.startswith(".")) if directory.is_dir() else 0
        quarantined = tuple(q.path.relative_to(root).as_posix() for q in cov.quarantined)
        end = ended.get(key)
        out.append(SeriesStatus(key, cov.first, cov.last, cov.rows, missing, exchange, files, quarantined,
                                cov.beyond, cov.beyond_first, end and end.at, end and end.why))  # fmt: skip
    return out
