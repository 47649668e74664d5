"""Landing files: every append is one file holding the rows of all its series, sealed later. No state.

An append must be durable when it returns, and making a file durable costs the same whatever it holds
(create, write, fsync, rename, directory fsync): one file per append keeps that cost flat however many
series the append touches. Landing files live in ``ROOT/_landing/`` (hidden from raw readers: pyarrow
and pandas skip names starting with ``_``, and the documented glob ``market=*/…`` does not reach them),
named by their sequence number, which orders them: of an open time landed twice, the later file wins,
and within a file the later row. :mod:`~trio_klines.store.dataset` seals them into the series' files,
then removes them; :mod:`~trio_klines.store.reading` reads them beside the series' files, so nothing
durable is ever invisible to :func:`~trio_klines.store.reading.load`.

A landing file has the store's columns plus ``market``, ``symbol`` and ``interval`` (dictionary
encoded), rows sorted by series and open time, unique; zstd and page checksums like every store file.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Final, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..core.markets import INTERVALS, Series, floor_open_time, is_open_time
from ..core.parse import Candle
from ..core.timefmt import iso_ms
from ..core.validity import MAX_OPEN_TIME, Refusal, candle_problem, key_problem
from ..errors import ConfigError, CorruptFile, InvalidCandles
from .batches import refused_candles
from .compaction import open_times, sort_unique
from .layout import series_dir
from .periodfiles import mixed_numbers, read_parquet_bytes
from .tables import SCHEMA, SERIES_COLUMNS, candles_to_table, schema_for

__all__ = [
    "LANDING_DIR",
    "LANDING_SCHEMA",
    "Landed",
    "landing_from_table",
    "landing_name",
    "landing_schema",
    "landing_table",
    "list_landing",
    "read_landing",
    "serialize_landing",
    "split_by_series",
]

logger = logging.getLogger("trio_klines.store")

LANDING_DIR: Final = "_landing"
_NAME_RE: Final = re.compile(r"(\d{12})\.parquet")
_DICT: Final = pa.dictionary(pa.int32(), pa.string())
#: A landing file's schema: the series' names, then :data:`~trio_klines.store.tables.SCHEMA`.
LANDING_SCHEMA: Final = pa.schema([pa.field(name, _DICT, nullable=False) for name in SERIES_COLUMNS] + list(SCHEMA))
_EXACT_LANDING_SCHEMA: Final = pa.schema(list(LANDING_SCHEMA)[:3] + list(schema_for("exact")))


def landing_schema(numbers: str) -> pa.Schema:
    """A landing file's schema in a dataset of ``numbers`` (``float``: :data:`LANDING_SCHEMA`)."""
    return _EXACT_LANDING_SCHEMA if schema_for(numbers) is not SCHEMA else LANDING_SCHEMA


def landing_name(seq: int) -> str:
    return f"{seq:012d}.parquet"


def list_landing(root: Path) -> list[tuple[int, Path]]:
    """The landing files under ``root``, oldest first; temporary and foreign names are skipped."""
    directory = root / LANDING_DIR
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return []
    found = []
    for entry in entries:
        match = _NAME_RE.fullmatch(entry.name)
        if match is None:
            continue
        if not entry.is_file(follow_symlinks=False):  # a link could bring rows from outside the root
            if entry.name not in _refused:
                _refused.add(entry.name)
                logger.error("ignoring %s: not a regular file (the store follows no link)", entry.path)
            continue
        found.append((int(match[1]), directory / entry.name))
    found.sort()
    return found


_refused: set[str] = set()


class Landed(NamedTuple):
    """An append as it lands: the ``table`` to write and the newest open time of each series in it."""

    table: pa.Table
    newest: dict[Series, int]


def landing_table(candles: Sequence[Candle], *, numbers: str = "float") -> Landed:
    """``candles`` (any series, any order) as a landing table of a dataset of ``numbers`` (``exact``: the
    candles' values are decimal strings); of a repeated open time the last one is kept.

    Raises :class:`~trio_klines.errors.RefusedCandles` naming every candle that is not valid
    (:mod:`trio_klines.core.validity`), before anything is built.
    """
    table = _exact_table(candles) if schema_for(numbers) is not SCHEMA else None
    if table is None:
        exact = numbers == "exact"
        refused = [Refusal(c, problem) for c in candles if (problem := candle_problem(c, exact=exact)) is not None]
        if refused:
            raise refused_candles(refused)
        table = candles_to_table(candles, numbers=numbers)
    names: dict[tuple[str, str, str], int] = {}
    codes = np.fromiter(
        (names.setdefault((c.market, c.symbol, c.interval), len(names)) for c in candles), np.int64, len(candles)
    )
    times = open_times(table)
    keep = _last_of_each(codes, times)
    series = [Series(*name) for name in names]
    columns = [
        pa.DictionaryArray.from_arrays(pa.array(codes[keep], pa.int32()), pa.array([getattr(s, c) for s in series]))
        for c in SERIES_COLUMNS
    ]
    landed = pa.Table.from_arrays(columns + list(table.take(keep).columns), schema=landing_schema(numbers))
    kept_codes, kept_times = codes[keep], times[keep]
    ends = [*np.flatnonzero(np.diff(kept_codes)).tolist(), kept_codes.size - 1]
    newest = {series[int(kept_codes[end])]: int(kept_times[end]) for end in ends} if keep.size else {}
    return Landed(landed, newest)


def _exact_table(candles: Sequence[Candle]) -> pa.Table | None:
    """Exact candles as a table when every one is valid, checked as :func:`~trio_klines.core.validity.candle_problem`
    would but with the values as columns (a seventh of its time); ``None`` when one is not, for that
    function to name them."""
    from .archive_csv import values_problem  # the table checks live with the reader that needs them most

    if any(key_problem(c) is not None for c in candles):
        return None
    try:
        table = candles_to_table(candles, numbers="exact")
    except ValueError:  # a value that is not a decimal string or does not fit
        return None
    return table if values_problem(table) is None else None


def landing_from_table(key: Series, table: pa.Table, *, numbers: str = "float") -> Landed:
    """One series' rows, a table in the schema of a dataset of ``numbers`` (any order, repeats allowed: the
    last one is kept), as a landing table. Raises :class:`~trio_klines.errors.InvalidCandles` for a bad
    series name or rows that are not valid candles of it (:func:`~trio_klines.store.archive_csv.table_problem`),
    before anything is built."""
    from .archive_csv import table_problem  # the table checks live with the reader that needs them most

    try:
        series_dir(key)
    except ConfigError as exc:
        raise InvalidCandles(str(exc)) from None
    problem = table_problem(key.interval, table, numbers=numbers)
    if problem is not None:
        raise InvalidCandles(f"{key}: {problem}")
    table = sort_unique(table.combine_chunks())
    rows = table.num_rows
    zeros = pa.array(np.zeros(rows, np.int32))
    columns = [pa.DictionaryArray.from_arrays(zeros, pa.array([getattr(key, c)])) for c in SERIES_COLUMNS]
    landed = pa.Table.from_arrays(columns + [c.combine_chunks() for c in table.columns], schema=landing_schema(numbers))
    return Landed(landed, {key: int(open_times(table)[-1])} if rows else {})


def _last_of_each(codes: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Row numbers sorted by (code, time), keeping the last row of each repeated pair."""
    order = np.lexsort((np.arange(codes.size), times, codes))
    codes, times = codes[order], times[order]
    last = np.ones(order.size, dtype=bool)
    last[:-1] = (codes[1:] != codes[:-1]) | (times[1:] != times[:-1])
    return order[last]


def serialize_landing(table: pa.Table) -> pa.Buffer:
    """A landing table as the bytes of its file: zstd's fast level, page checksums, no statistics.

    Not snappy, though it writes a landing file faster and no larger: a page checksum does not cover the
    page's header, and with snappy a flipped byte there dropped rows silently, where zstd's frame sizes
    make it an error (tests/store/test_landing.py flips every byte).
    """
    sink = pa.BufferOutputStream()
    pq.write_table(
        table,
        sink,
        compression="zstd",
        compression_level=-1,
        write_statistics=False,
        write_page_checksum=True,
        store_schema=False,
    )
    return sink.getvalue()


def read_landing(path: Path, *, numbers: str = "float") -> pa.Table:
    """A landing file's rows, every page checksum verified and every series name and open time checked, in
    a dataset of ``numbers``.

    Raises :class:`~trio_klines.errors.CorruptFile`, :class:`FileNotFoundError` (sealed and removed since
    it was listed) or another :class:`OSError` (``EIO``…); :class:`~trio_klines.errors.StoreError` for a
    file of the other numbers (never quarantined: see :mod:`~trio_klines.store.periodfiles`).
    """
    try:
        table = read_parquet_bytes(path)
    except UnicodeDecodeError as exc:  # a garbled name in the footer
        raise CorruptFile(path, f"unreadable: {exc}") from exc
    except (OSError, pa.ArrowException) as exc:
        if isinstance(exc, OSError) and exc.errno is not None:
            raise
        if isinstance(exc, FileNotFoundError) or "No such file" in str(exc):
            raise FileNotFoundError(str(path)) from exc
        raise CorruptFile(path, f"unreadable: {exc}") from exc
    wanted = landing_schema(numbers)
    other = LANDING_SCHEMA if wanted is not LANDING_SCHEMA else _EXACT_LANDING_SCHEMA
    if _values_of(table.schema) == _values_of(other):  # a cast would convert them silently
        raise mixed_numbers(path, "float" if other is LANDING_SCHEMA else "exact")
    try:
        table = table.cast(wanted)
    except (pa.ArrowException, ValueError) as exc:
        raise CorruptFile(path, f"unexpected schema {table.schema}") from exc
    problem = _problem(table)
    if problem is not None:
        raise CorruptFile(path, problem)
    return table


def _values_of(schema: pa.Schema) -> list[tuple[str, pa.DataType]]:
    """The columns of ``schema`` past the series' names (which a landing file may store as plain strings)."""
    return [(f.name, f.type) for f in schema if f.name not in SERIES_COLUMNS]


def _problem(table: pa.Table) -> str | None:
    """What is wrong with a landing table's names or open times, vectorised by interval, or ``None``."""
    columns = {name: table.column(name).combine_chunks() for name in SERIES_COLUMNS}
    if not all(isinstance(c, pa.DictionaryArray) for c in columns.values()):  # pragma: no cover - cast made them
        return "series columns are not dictionary encoded"
    indices = [np.asarray(columns[name].indices, dtype=np.int64) for name in SERIES_COLUMNS]
    values = [columns[name].dictionary.to_pylist() for name in SERIES_COLUMNS]
    codes = np.zeros(table.num_rows, np.int64)
    for index, names in zip(indices, values, strict=True):
        codes = codes * max(len(names), 1) + index
    firsts = np.unique(codes, return_index=True)[1]
    for row in firsts.tolist():
        key = Series(*(names[int(index[row])] for index, names in zip(indices, values, strict=True)))
        if key not in _checked:
            try:
                series_dir(key)
            except ConfigError as exc:
                return str(exc)
            _checked.add(key)
    times = open_times(table)
    interval_index, intervals = indices[2], values[2]
    for code, interval in enumerate(intervals):
        if interval not in INTERVALS:
            return f"unknown interval {interval!r}"
        problem = _times_problem(interval, times[interval_index == code])
        if problem is not None:
            return problem
    return None


#: Series whose names were checked already (a few thousand at most; checking costs ~20 µs each).
_checked: set[Series] = set()


def _times_problem(interval: str, times: np.ndarray) -> str | None:
    if times.size and not (int(times.min()) >= 0 and int(times.max()) < MAX_OPEN_TIME):
        return "open times out of range"
    length = INTERVALS[interval]
    if length is None:
        off = [t for t in times.tolist() if not is_open_time(interval, t)]
    else:
        off = times[(times - floor_open_time(interval, 0)) % length != 0].tolist()
    return f"open times off the {interval} grid: {', '.join(iso_ms(int(t)) for t in off[:3])}" if off else None


def split_by_series(tables: Iterable[pa.Table]) -> dict[Series, pa.Table]:
    """Landing tables, oldest first, as one table per series in the store's schema: sorted by open time,
    one row per open time, the later row winning (a later table, or later in its table).

    Raises :class:`~trio_klines.errors.ConfigError` if a series name is not one the store writes.
    """
    parts = [t for t in tables if t.num_rows]
    if not parts:
        return {}
    combined = pa.concat_tables(parts).unify_dictionaries().combine_chunks()
    keys = []
    for name in SERIES_COLUMNS:
        column = combined.column(name).chunk(0) if combined.column(name).num_chunks else pa.array([], _DICT)
        keys.append((np.asarray(column.indices, dtype=np.int64), column.dictionary.to_pylist()))
    # One code per (market, symbol, interval) combination: mixed radix over the three dictionaries.
    codes = np.zeros(combined.num_rows, np.int64)
    for indices, values in keys:
        codes = codes * max(len(values), 1) + indices
    times = open_times(combined)
    keep = _last_of_each(codes, times)
    values = combined.select(list(SCHEMA.names)).take(keep)
    kept = codes[keep]
    starts = [0, *(np.flatnonzero(np.diff(kept)) + 1).tolist()]
    stops = [*starts[1:], int(kept.size)]
    found: dict[Series, pa.Table] = {}
    for start, stop in zip(starts, stops, strict=True):
        row = int(keep[start])
        key = Series(*(values_[int(indices[row])] for indices, values_ in keys))
        if key not in _checked:
            try:
                series_dir(key)
            except ConfigError as exc:
                message = f"a landing file holds {key}, which is not a series the store writes: {exc}"
                raise ConfigError(message) from exc
            _checked.add(key)
        found[key] = values.slice(start, stop - start)
    return found
