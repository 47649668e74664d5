"""Ranges the exchange itself has no candles for (maintenance windows, halts, not yet listed).

The ledger is a small JSON file next to the data (``ROOT/_meta/exchange_gaps.json``; pyarrow, pandas and
DuckDB skip ``_`` names), so that ``status`` reports these ranges as exchange gaps and the backfiller
never requests them again in a loop.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Final

from ..core.gaps import RangeSet
from ..core.markets import Series, series
from ..errors import KlinesError

__all__ = ["LEDGER_PATH", "ExchangeGapLedger"]

log = logging.getLogger("trio_klines.backfill")

LEDGER_PATH: Final = Path("_meta") / "exchange_gaps.json"


class ExchangeGapLedger:
    """Ranges the exchange has no candles for, per series, persisted atomically under the data root."""

    def __init__(self, root: Path | str) -> None:
        self.path = Path(root) / LEDGER_PATH
        self._gaps: dict[Series, RangeSet] = {}
        self._dirty = False
        self._load()

    def _load(self) -> None:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            # Unreadable ledger: the worst outcome is re-asking the exchange for empty ranges once.
            log.error("cannot read %s (%s); exchange gaps will be re-learned", self.path, exc)
            return
        for key, ranges in raw.items() if isinstance(raw, dict) else ():
            try:
                market, interval, symbol = key.split("/")
                self._gaps[series(market, symbol, interval)] = RangeSet((int(a), int(b)) for a, b in ranges)
            except (KlinesError, ValueError, TypeError):
                log.error("ignoring a bad entry %r in %s", key, self.path)

    def ranges(self, s: Series) -> RangeSet:
        return self._gaps.get(s, RangeSet())

    def all(self) -> dict[Series, RangeSet]:
        return {s: RangeSet(r) for s, r in self._gaps.items()}

    def add(self, s: Series, start: int, end: int) -> None:
        self._gaps.setdefault(s, RangeSet()).add(start, end)
        self._dirty = True
        self.save()

    def save(self) -> bool:
        """Write the ledger if it changed since it was last written; ``False`` if that failed.

        A failure (disk full, I/O error) is logged and never raised: the ranges stay known in memory and
        the next :meth:`add` or :meth:`save` writes them; lost, they only cost asking the exchange again.
        """
        if not self._dirty:
            return True
        data = {f"{s.market}/{s.interval}/{s.symbol}": list(r) for s, r in sorted(self._gaps.items())}
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(data, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            log.error("cannot write %s (%s); the exchange gaps stay in memory and are written later", self.path, exc)
            with contextlib.suppress(OSError):
                tmp.unlink()
            return False
        self._dirty = False
        return True
