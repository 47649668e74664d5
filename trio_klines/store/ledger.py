"""Ranges the exchange itself has no candles for (maintenance windows, halts, not yet listed).

The ledger is a small JSON file next to the data (``ROOT/_meta/exchange_gaps.json``; pyarrow, pandas and
DuckDB skip ``_`` names). It keeps two kinds of range per series apart:

- *suspected*: a page came back without these candles once. A transient fault does that too (an empty
  or short page), so a suspected range is still *missing*: ``status`` counts it so, and the backfiller
  asks for it again;
- *confirmed*: asked again later, the exchange still had nothing there while it returned the candles on
  both sides (see :mod:`trio_klines.pipeline.backfill`). Only these are exchange gaps: ``status``
  subtracts them from missing (:meth:`ExchangeGapLedger.ranges`) and the backfiller never asks again.

The file::

    {"format": 2, "confirmed": {"usdt_futures/1m/BTCUSDT": [[start, end], ...]}, "suspected": {...}}

A file of the first release (``{"usdt_futures/1m/BTCUSDT": [[start, end], ...]}``, no ``format``) was
written without confirmation: its ranges are loaded as suspected, so that each is checked once, and the
next write stores them in the current format (confirmed or cleared by then, or still suspected).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Final, NamedTuple

from ..core.gaps import RangeSet
from ..core.markets import Series
from ..errors import KlinesError
from .layout import key_series, series_key

__all__ = ["LEDGER_FORMAT", "LEDGER_PATH", "ExchangeGapLedger", "LedgerSnapshot"]

log = logging.getLogger("trio_klines.backfill")

LEDGER_PATH: Final = Path("_meta") / "exchange_gaps.json"
#: The version written in the file's ``format``; a file without one is the first release's.
LEDGER_FORMAT: Final = 2


class LedgerSnapshot(NamedTuple):
    """The ledger's content at one :meth:`ExchangeGapLedger.snapshot`, ready to write."""

    version: int
    data: dict[str, object]


class ExchangeGapLedger:
    """Confirmed and suspected exchange gaps, per series, persisted atomically under the data root.

    A plain synchronous class. Reading happens in the constructor; :meth:`confirm`, :meth:`suspect` and
    :meth:`clear` only record, in memory; :meth:`save` (or :meth:`snapshot` then :meth:`write`) is the
    blocking file work, which trio code runs in a worker thread (``trio.to_thread.run_sync``), never on
    the event loop.
    """

    def __init__(self, root: Path | str) -> None:
        self.path = Path(root) / LEDGER_PATH
        self._confirmed: dict[Series, RangeSet] = {}
        self._suspected: dict[Series, RangeSet] = {}
        #: One more per change; the file holds every change up to ``_saved_version``.
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
        if not isinstance(raw, dict):
            log.error("ignoring %s: not a JSON object; exchange gaps will be re-learned", self.path)
            return
        if "format" not in raw:
            # The first release trusted one empty answer: check each of its ranges once before trusting it.
            self._read_ranges(raw, self._suspected)
            if self._suspected:
                log.warning("%s: %d series' exchange gaps were never confirmed; they are checked again",
                            self.path, len(self._suspected))  # fmt: skip
                self._version += 1  # rewritten in the current format at the next save
            return
        if raw["format"] != LEDGER_FORMAT:
            log.error("ignoring %s: format %r, this version reads %d", self.path, raw["format"], LEDGER_FORMAT)
            return
        for name, into in (("confirmed", self._confirmed), ("suspected", self._suspected)):
            part = raw.get(name, {})
            self._read_ranges(part if isinstance(part, dict) else {}, into)

    def _read_ranges(self, raw: Mapping[str, object], into: dict[Series, RangeSet]) -> None:
        for key, ranges in raw.items():
            try:
                into[key_series(key)] = RangeSet((int(a), int(b)) for a, b in ranges)  # type: ignore[attr-defined]
            except (KlinesError, ValueError, TypeError):
                log.error("ignoring a bad entry %r in %s", key, self.path)

    # --- reading --------------------------------------------------------------------------------

    def ranges(self, s: Series) -> RangeSet:
        """The confirmed exchange gaps of ``s``: what ``status`` subtracts from missing, never fetched again."""
        return self._confirmed.get(s, RangeSet())

    def suspected(self, s: Series) -> RangeSet:
        """The ranges of ``s`` a page lacked that are not confirmed yet: still missing."""
        return self._suspected.get(s, RangeSet())

    def all(self) -> dict[Series, RangeSet]:
        """Every confirmed exchange gap, per series (a copy)."""
        return {s: RangeSet(r) for s, r in self._confirmed.items() if len(r)}

    def all_suspected(self) -> dict[Series, RangeSet]:
        """Every suspected range, per series (a copy)."""
        return {s: RangeSet(r) for s, r in self._suspected.items() if len(r)}

    # --- changes (memory only) -------------------------------------------------------------------

    def confirm(self, s: Series, start: int, end: int) -> None:
        """Record ``[start, end)`` as a confirmed exchange gap of ``s`` (no longer suspected)."""
        if start >= end:
            return
        self._confirmed.setdefault(s, RangeSet()).add(start, end)
        self._suspected.get(s, RangeSet()).remove(start, end)
        self._version += 1

    def suspect(self, s: Series, start: int, end: int) -> None:
        """Record that a page lacked ``[start, end)`` of ``s`` (the parts already confirmed stay so)."""
        parts = self.ranges(s).missing(start, end)
        if not parts:
            return
        held = self._suspected.setdefault(s, RangeSet())
        for lo, hi in parts:
            held.add(lo, hi)
        self._version += 1

    def clear(self, s: Series, start: int, end: int) -> None:
        """Forget the suspicion over ``[start, end)`` of ``s``: the exchange returned candles there."""
        held = self._suspected.get(s)
        if held is None or held.missing(start, end) == [(start, end)]:  # nothing suspected there
            return
        held.remove(start, end)
        self._version += 1

    # --- the file --------------------------------------------------------------------------------

    @property
    def dirty(self) -> bool:
        """Whether anything changed since the file was last written."""
        return self._version != self._saved_version

    def snapshot(self) -> LedgerSnapshot | None:
        """What :meth:`write` would write now, or ``None`` when the file already holds every range.

        No I/O, a copy of a few small lists: cheap enough for the event loop, so that the write itself
        (which fsyncs) can run in a worker thread while more ranges are added.
        """
        if not self.dirty:
            return None

        def dump(gaps: dict[Series, RangeSet]) -> dict[str, list[tuple[int, int]]]:
            return {series_key(s): list(r) for s, r in sorted(gaps.items()) if len(r)}

        data = {"format": LEDGER_FORMAT, "confirmed": dump(self._confirmed), "suspected": dump(self._suspected)}
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
        # Changes made while writing keep the ledger dirty: their version is newer than this snapshot's.
        self._saved_version = max(self._saved_version, snapshot.version)
        return True
