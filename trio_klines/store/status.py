"""Per series: what the store holds, what is missing, and what the exchange itself never had."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.markets import Series, count_open_times
from .coverage import coverage
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

    def as_dict(self) -> dict[str, Any]:
        return {"market": self.series.market, "symbol": self.series.symbol, "interval": self.series.interval,
                "first": self.first, "last": self.last, "rows": self.rows, "missing": self.missing,
                "exchange_gaps": self.exchange_gaps, "files": self.files}  # fmt: skip


def store_status(root: Path) -> list[SeriesStatus]:
    """Per series: what is stored, what is missing, and what the exchange itself never had."""
    ledger = ExchangeGapLedger(root)
    out = []
    for key, cov in coverage(root).items():
        known = ledger.ranges(key)
        missing = exchange = 0
        for gap in cov.gaps:
            unexplained = sum(count_open_times(key.interval, lo, hi) for lo, hi in known.missing(gap.start, gap.end))
            missing += unexplained
            exchange += gap.candles - unexplained
        files = sum(1 for p in root.joinpath(*series_dir(key)).glob("*.parquet") if not p.name.startswith("."))
        out.append(SeriesStatus(key, cov.first, cov.last, cov.rows, missing, exchange, files))
    return out
