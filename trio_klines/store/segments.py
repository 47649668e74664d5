"""Where a stored candle lives: its *home* file, chosen once and kept for good. Pure: no I/O.

**Why rows never move.** Raw readers (pandas, pyarrow, polars, DuckDB) list a directory, then open the
files they listed, one after the other. Moving rows from file A to file B (a merge) changes two paths,
and no file system changes two paths at one instant: a reader that opens A after the move and B before
it sees those rows twice; one that opens them the other way round sees them nowhere; one that listed B
before it was removed fails to open it. Waiting before removing does not help: the reader picks the
moment. So a row, once visible, stays in the same path for good, and a path changes only by being
replaced whole (``rename`` over it: atomic, and a reader that opened the old file keeps reading it).
Then each open time is in exactly one path at every instant, and a raw reader never sees it twice,
however it interleaves with the writer; one that opens each file once (pandas, pyarrow) never fails
either. polars and DuckDB read a file's footer, then its data, by path, each time opening it again: a
segment replaced in between fails their read (measured; an error, not a wrong row). Replacements that
keep the old file's bytes as a prefix (new row groups appended) would let them read the old version.

**Segments.** The files of a series' period are *segments* with disjoint open-time ranges. New rows go
to the segment whose range holds them (a correction replaces its row), or into the gap after a
segment, which grows into it while it holds fewer than the *cap* rows; otherwise they start a new
segment of their own. A segment is rewritten whole each time it takes rows, so the cap bounds what a
seal rewrites (and a file's write amplification) while a live series keeps a bounded number of files:
``cap`` rows per file, the cap being at least :data:`SEGMENT_MIN_ROWS` and :data:`SEALS_PER_SEGMENT`
seals' worth of candles. History written in large batches makes large segments at once (one per
period for a whole period).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, NamedTuple

import numpy as np

from ..core.markets import DAY, INTERVALS
from .compaction import FileInfo
from .layout import MAX_ROWS_PER_FILE

__all__ = ["SEALS_PER_SEGMENT", "SEGMENT_MIN_ROWS", "Home", "plan_homes", "segment_rows"]

#: A segment takes new rows while it holds fewer than this many (a day of ``1m`` candles)...
SEGMENT_MIN_ROWS: Final = 1_440
#: ... or than this many seals' worth of candles, if more (``1s``: 24 seals of 10 minutes, 4 hours).
SEALS_PER_SEGMENT: Final = 24
_MONTH_MS: Final = 31 * DAY


def segment_rows(interval: str, seal_seconds: float) -> int:
    """The cap of ``interval``'s segments when a seal comes every ``seal_seconds``."""
    length = INTERVALS[interval] or _MONTH_MS
    per_seal = max(1, int(seal_seconds * 1000) // length)
    return min(MAX_ROWS_PER_FILE, max(SEGMENT_MIN_ROWS, SEALS_PER_SEGMENT * per_seal))


class Home(NamedTuple):
    """Where ``times[start:stop]`` go: into ``segment`` (rewritten with them), or a new segment (``None``)."""

    segment: FileInfo | None
    start: int
    stop: int


def plan_homes(segments: Sequence[FileInfo], times: np.ndarray, cap: int) -> list[Home]:
    """The homes of new rows of one period, in the order of ``times`` (sorted, unique open times).

    ``segments`` are the period's files, with disjoint ranges. Each time goes to the segment whose
    range holds it; a time in the gap after a segment goes there too if the segment would then hold at
    most ``cap`` rows (counting every new row as one more), else the gap's times make a new segment;
    times before the first segment make a new one. The ranges stay disjoint: a segment grows only into
    the gap after it, a new segment fills part of one gap.
    """
    if times.size == 0:
        return []
    ordered = sorted(segments, key=lambda s: s.first)
    firsts = np.array([s.first for s in ordered], dtype=np.int64)
    lasts = np.array([s.last for s in ordered], dtype=np.int64)
    # The segment starting at or before each time (-1: before the first one), and whether it holds it.
    index = np.searchsorted(firsts, times, "right") - 1
    inside = (index >= 0) & (times <= lasts[np.maximum(index, 0)]) if ordered else np.zeros(times.size, bool)
    # Times are sorted, so each segment's times (inside it, then in the gap after it) are one run.
    breaks = np.flatnonzero(np.diff(index)) + 1
    starts = [0, *breaks.tolist()]
    stops = [*breaks.tolist(), int(times.size)]
    homes = []
    for start, stop in zip(starts, stops, strict=True):
        i = int(index[start])
        if i < 0:
            homes.append(Home(None, start, stop))
            continue
        segment = ordered[i]
        split = start + int(np.count_nonzero(inside[start:stop]))
        if split == stop or segment.rows + (stop - start) <= cap:
            homes.append(Home(segment, start, stop))
            continue
        if split > start:
            homes.append(Home(segment, start, split))
        homes.append(Home(None, split, stop))
    return homes
