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
from typing import Final, NamedTuple

from ..core.gaps import RangeSet
from ..core.markets import Series, series
from ..errors import KlinesError

__all__ = ["LEDGER_PATH", "ExchangeGapLedger", "LedgerSnapshot"]

log = logging.getLogger("trio_klines.backfill")

LEDGER_PATH: Final = Path("_meta") / "exchange_gaps.json"


class LedgerSnapshot(NamedTuple):
    """The ledger's content at one :meth:`ExchangeGapLedger.snapshot`, ready to write."""

    version: int
    data: dict[str, list[tuple[int, int]]]


class ExchangeGapLedger:
    """Ranges the exchange has no candles for, per series, persisted atomically under the data root.

    A plain synchronous class. Reading happens in the constructor; :meth:`add` only records, in
    memory; :meth:`save` (or :meth:`snapshot` then :meth:`write`) is the blocking file work, which
    trio code runs in a worker thread (``trio.to_thread.run_sync``), never on the event loop.
    """

    def __init__(self, root: Path | str) -> None:
        self.path = Path(root) / LEDGER_PATH
        self._gaps: dict[Series, RangeSet] = {}
        #: One more per :meth:`add`; the file holds every range up to ``_saved_version``.
        self._version = 0
        self._saved_version = 0
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
        """Record ``[start, end)`` as an exchange gap of ``s``, in memory only: :meth:`save` writes it."""
        self._gaps.setdefault(s, RangeSet()).add(start, end)
        self._version += 1

    @property
    def dirty(self) -> bool:
        """Whether ranges were added since the file was last written."""
        return self._version != self._saved_version

    def snapshot(self) -> LedgerSnapshot | None:
        """What :meth:`write` would write now, or ``None`` when the file already holds every range.

        No I/O, a copy of a few small lists: cheap enough for the event loop, so that the write itself
        (which fsyncs) can run in a worker thread while more ranges are added.
        """
        if not self.dirty:
            return None
        data = {f"{s.market}/{s.interval}/{s.symbol}": list(r) for s, r in sorted(self._gaps.items())}
        return LedgerSnapshot(self._version, data)

    def save(self) -> bool:
        """Write the ledger if it changed since it was last written; ``False`` if that failed.

        Blocking file work (fsync): call it from a worker thread, or before the event loop starts. Not
        while ranges may be added from another thread: then take a :meth:`snapshot` there and
        :meth:`write` it here.
        """
        snapshot = self.snapshot()
        return True if snapshot is None else self.write(snapshot)

    def write(self, snapshot: LedgerSnapshot) -> bool:
        """Write ``snapshot`` atomically (temporary file, fsync, rename); ``False`` if that failed.

        Blocking file work: meant for a worker thread; one write at a time per ledger. A failure (disk
        full, I/O error) is logged and never raised: the ranges stay known in memory and the next save
        writes them; lost, they only cost asking the exchange again.
        """
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(snapshot.data, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            log.error("cannot write %s (%s); the exchange gaps stay in memory and are written later", self.path, exc)
            with contextlib.suppress(OSError):
                tmp.unlink()
            return False
        # Ranges added while writing keep the ledger dirty: their version is newer than this snapshot's.
        self._saved_version = max(self._saved_version, snapshot.version)
        return True
