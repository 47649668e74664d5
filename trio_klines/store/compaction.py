"""Which files of a period to merge, and how rows are merged. Pure: no I/O.

**Merging.** Files are listed oldest first (by the append range in their names). Rows are sorted by
open time and, where an open time repeats, the row of the latest file wins: a backfilled candle that
arrives after a live one replaces it, and a repeated batch changes nothing.

**When to merge** (:func:`plan_merge`), in this order, always a run of consecutive files:

1. Files whose open-time ranges overlap may repeat an open time, which readers of the raw files
   (``pd.read_parquet(root)``, DuckDB) would see twice: they are merged, with every newer file.
2. A closed period (one with a newer period after it) holding more than ``fan_in`` files is merged whole.
3. Otherwise files are *tiered*: a file's tier is ``floor(log_fan_in(rows))``; once ``fan_in``
   files of one tier follow each other, with only files of lower tiers between them, that run is
   merged into one file of the next tier (the newest such run first). Every row is then rewritten
   about ``log_fan_in(rows in the period)`` times, and a period holds about ``fan_in - 1`` files per
   tier. Small files between big ones wait for the next merge of the big ones.

Appends in time order (a live recording) never overlap, so they only ever pay for step 3; a batch
that corrects or fills in the past pays for rewriting its period once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Final, NamedTuple

import numpy as np
import pyarrow as pa

from .layout import FileName

__all__ = [
    "DEFAULT_POLICY",
    "CompactionPolicy",
    "CompactionSummary",
    "FileInfo",
    "merge_tables",
    "open_times",
    "plan_merge",
    "redundant_files",
    "sort_unique",
    "tier",
]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class CompactionPolicy:
    """How eagerly a :class:`~trio_klines.store.dataset.Store` compacts while appending.

    ``fan_in``: files of one tier merged together (≥ 2). Automatic compaction is paid for with credit:
    each append earns ``credit_per_append`` times its own cost, each merge spends its cost, and merges
    run while credit is positive. A cost is counted in rows, a file counting as ``file_cost_rows`` rows
    (its fixed overhead: creating, fsyncing, opening). One merge may overdraw; while merges are waiting
    the next appends pay the debt, and when none is waiting credit and debt are reset. So no append
    does more than its share plus one merge (at most one period, ~100k rows). ``auto=False``: compact
    only on demand.
    """

    fan_in: int = 8
    credit_per_append: float = 8.0
    file_cost_rows: int = 1_000
    auto: bool = True

    def __post_init__(self) -> None:
        if self.fan_in < 2:
            raise ValueError(f"fan_in must be at least 2, not {self.fan_in}")
        if self.credit_per_append <= 0 or self.file_cost_rows < 0:
            raise ValueError("credit_per_append must be positive and file_cost_rows not negative")

    def cost(self, files: int, rows: int) -> float:
        """The cost of writing or merging ``files`` files holding ``rows`` rows, in rows."""
        return files * self.file_cost_rows + rows


DEFAULT_POLICY: Final = CompactionPolicy()


@dataclasses.dataclass(frozen=True, slots=True)
class CompactionSummary:
    """What :meth:`Store.compact` did; ``errors`` names the periods it could not merge, and why."""

    series: int
    periods_merged: int
    files_before: int
    files_after: int
    rows: int
    quarantined: int
    errors: tuple[str, ...] = ()

    def __str__(self) -> str:
        text = (
            f"{self.series} series: merged {self.periods_merged} period(s), {self.files_before} file(s) into"
            f" {self.files_after}, {self.rows} rows"
        )
        if self.quarantined:
            text += f"; {self.quarantined} corrupt file(s) moved to quarantine"
        if self.errors:
            text += f"; {len(self.errors)} error(s): " + "; ".join(self.errors)
        return text


class FileInfo(NamedTuple):
    """What the store knows of one period file: its name and, from its footer, rows and open times."""

    name: FileName
    rows: int
    first: int
    last: int


def tier(rows: int, fan_in: int) -> int:
    """``floor(log_fan_in(rows))``, 0 for fewer than ``fan_in`` rows."""
    level = 0
    limit = fan_in
    while rows >= limit:
        level += 1
        limit *= fan_in
    return level


def plan_merge(files: Sequence[FileInfo], *, closed: bool, fan_in: int) -> slice | None:
    """Which files of one period to merge next (the rules above), as a slice of ``files``, or ``None``.

    ``files`` are in append order and not redundant (see :func:`redundant_files`); the slice is a run
    of neighbours, so a merge's inputs are consecutive appends (what :func:`redundant_files` relies on).
    """
    n = len(files)
    if n < 2:
        return None
    overlapping = _first_overlapping(files)
    if overlapping is not None:
        return slice(overlapping, n)
    if closed and n > fan_in:
        return slice(0, n)
    tiers = [tier(f.rows, fan_in) for f in files]
    # Newest first, and not only at the end: a merge that had to wait (no credit) must still be found
    # after newer appends arrived.
    for end in range(n - 1, 0, -1):
        start = end
        while start > 0 and tiers[start - 1] <= tiers[end]:
            start -= 1
        if sum(1 for t in tiers[start : end + 1] if t == tiers[end]) >= fan_in:
            return slice(start, end + 1)
    return None


def _first_overlapping(files: Sequence[FileInfo]) -> int | None:
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
    """The ``candle_begin_time`` column as int64 ms."""
    column = table.column("candle_begin_time")
    if column.num_chunks == 0:
        return np.empty(0, np.int64)
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
    combined = pa.concat_tables(tables)
    times = open_times(combined)
    # lexsort's last key is the primary one; the stable rank keeps each time's rows in write order.
    rank = np.repeat(np.arange(len(tables)), [t.num_rows for t in tables])
    order = np.lexsort((rank, times))
    return combined.take(_last_of_each(times[order], order))


def _last_of_each(sorted_times: np.ndarray, order: np.ndarray) -> np.ndarray:
    keep = np.ones(sorted_times.size, dtype=bool)
    keep[:-1] = sorted_times[1:] != sorted_times[:-1]
    return order[keep]
