"""Merging rows of one series, and the legacy layout's overlapping files. Pure: no I/O.

**Merging.** Tables are given oldest write first; rows are sorted by open time and, where an open time
repeats, the row of the latest write wins: a backfilled candle that arrives after a live one replaces
it, and a repeated batch changes nothing.

**The legacy layout.** Datasets written before segments (see :mod:`~trio_klines.store.segments`) may hold
files of one period whose open times overlap (appends not yet merged), and the inputs of a merge that was
interrupted (:func:`redundant_files`). The store merges such a period into one file the first time it
writes the series (:func:`first_overlapping` finds them); readers merge them as they read.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import pyarrow as pa

from .layout import FileName

__all__ = [
    "CompactionSummary",
    "FileInfo",
    "first_overlapping",
    "merge_tables",
    "open_times",
    "redundant_files",
    "sort_unique",
]


@dataclasses.dataclass(frozen=True, slots=True)
class CompactionSummary:
    """What :meth:`Store.compact` did: rows sealed from landing files into ``files`` series files, legacy
    periods merged (``periods_merged``, ``files_before`` into ``files_after``); ``errors`` names what failed."""

    series: int
    periods_merged: int
    files_before: int
    files_after: int
    rows: int
    quarantined: int
    errors: tuple[str, ...] = ()
    files: int = 0

    def __str__(self) -> str:
        text = f"{self.series} series: sealed {self.rows} rows into {self.files} file(s)"
        if self.periods_merged:
            text += (
                f"; merged {self.periods_merged} period(s) of the older layout,"
                f" {self.files_before} file(s) into {self.files_after}"
            )
        if self.quarantined:
            text += f"; {self.quarantined} corrupt file(s) moved to quarantine"
        if self.errors:
            text += f"; {len(self.errors)} error(s): " + "; ".join(self.errors)
        return text


class FileInfo(NamedTuple):
    """What the store knows of one period file: its name and, from its footer, rows, open times and
    whether it is packed (zstd) or still open to more rows (snappy: cheaper to rewrite)."""

    name: FileName
    rows: int
    first: int
    last: int
    packed: bool = True


def first_overlapping(files: Sequence[FileInfo]) -> int | None:
    """Index of the oldest file whose open-time range meets another file's, or ``None``.

    Sorted by first open time, a file meets an earlier one iff it starts before the furthest end seen
    so far, and a later one iff the next file starts before it ends.
    """
    order = sorted(range(len(files)), key=lambda i: files[i].first)
    found = []
    furthest = None
    for position, index in enumerate(order):
        info = files[index]
        starts_inside = furthest is not None and info.first <= furthest
        next_inside = position + 1 < len(order) and files[order[position + 1]].first <= info.last
        if starts_inside or next_inside:
            found.append(index)
        furthest = info.last if furthest is None else max(furthest, info.last)
    return min(found) if found else None


def redundant_files(names: Sequence[FileName]) -> list[FileName]:
    """Files left behind by an interrupted merge: their appends are all in a merged file of the same period.

    A merge writes its output (named with the union of its inputs' ranges) before deleting its inputs,
    and it only ever merges a run of consecutive files, so a file whose range lies inside another's was
    one of that file's inputs.
    """
    by_period: dict[str, list[FileName]] = {}
    for name in names:
        by_period.setdefault(name.period, []).append(name)
    found = []
    for group in by_period.values():
        group.sort(key=lambda f: (f.lo, -f.hi))
        widest_hi = -1
        for name in group:
            # Sorted by lo, widest first: a file is inside an earlier one iff its hi is not beyond theirs.
            if name.hi <= widest_hi:
                found.append(name)
            widest_hi = max(widest_hi, name.hi)
    return found


def open_times(table: pa.Table) -> np.ndarray:
    """The ``candle_begin_time`` column as int64 ms (a view of its buffer when it is one chunk)."""
    column = table.column("candle_begin_time")
    if column.num_chunks == 0:
        return np.empty(0, np.int64)
    if column.num_chunks == 1 and column.null_count == 0:
        # The timestamps' buffer is int64 already: no cast kernel (about 8 µs a call, called per file).
        chunk = column.chunk(0)
        return np.frombuffer(chunk.buffers()[1], np.int64, len(chunk), chunk.offset * 8)
    return column.cast(pa.int64()).to_numpy()


def sort_unique(table: pa.Table) -> pa.Table:
    """``table`` sorted by open time, keeping the last row (in table order) of each repeated open time."""
    times = open_times(table)
    if times.size < 2 or bool(np.all(times[1:] > times[:-1])):
        return table
    order = np.argsort(times, kind="stable")
    return table.take(_last_of_each(times[order], order))


def merge_tables(tables: Sequence[pa.Table]) -> pa.Table:
    """Tables of one series, oldest write first, as one table sorted by open time, later writes winning."""
    if len(tables) == 1:
        return sort_unique(tables[0])
    if _in_order(tables):  # the usual seal: a segment's new rows all come after its last one
        return pa.concat_tables(tables).combine_chunks()
    combined = pa.concat_tables(tables)
    times = open_times(combined)
    # lexsort's last key is the primary one; the stable rank keeps each time's rows in write order.
    rank = np.repeat(np.arange(len(tables)), [t.num_rows for t in tables])
    order = np.lexsort((rank, times))
    return combined.take(_last_of_each(times[order], order))


def _in_order(tables: Sequence[pa.Table]) -> bool:
    """Whether every table is sorted and unique and each one's open times all follow the previous one's."""
    last = None
    for table in tables:
        times = open_times(table)
        if times.size == 0:
            continue
        if (times.size > 1 and not bool(np.all(times[1:] > times[:-1]))) or (last is not None and times[0] <= last):
            return False
        last = int(times[-1])
    return True


def _last_of_each(sorted_times: np.ndarray, order: np.ndarray) -> np.ndarray:
    keep = np.ones(sorted_times.size, dtype=bool)
    keep[:-1] = sorted_times[1:] != sorted_times[:-1]
    return order[keep]
