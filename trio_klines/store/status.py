"""Per series: what the store holds, what is missing, and what the exchange itself never had.

Candles a quarantined file held count as missing until they are stored again. Rows opening more than
:data:`STORED_AHEAD_MS` after the clock (the local one unless ``now`` is given) cannot be real closed
candles: they are counted apart (``beyond_clock``), and neither end the series nor open a gap before them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.markets import Series, count_open_times
from ..core.validity import STORED_AHEAD_MS
from .coverage import coverage
from .ended import read_ended
from .layout import series_dir
from .ledger import ExchangeGapLedger

__all__ = ["SeriesStatus", "store_status"]



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

    def as_dict(self) -> dict[str, Any]:
        return {"market": self.series.market, "symbol": self.series.symbol, "interval": self.series.interval,
                "first": self.first, "last": self.last, "rows": self.rows, "missing": self.missing,
                "exchange_gaps": self.exchange_gaps, "files": self.files, "quarantined": list(self.quarantined),
                "beyond_clock": self.beyond_clock, "beyond_clock_first": self.beyond_clock_first,
                "ended": self.ended, "ended_why": self.ended_why}  # fmt: skip


def store_status(root: Path, *, now: int | None = None) -> list[SeriesStatus]:
    """Per series: what is stored, what is missing, and what the exchange itself never had.

    ``now`` (ms) is the clock that rows beyond are set aside from (default: the local clock). Raises
    :class:`~trio_klines.errors.StoreError` if ``root`` is not a store or a file cannot be read (``EIO``);
    whatever the files hold, it reports.
    """
    clock = int(time.time() * 1000) if now is None else now
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
