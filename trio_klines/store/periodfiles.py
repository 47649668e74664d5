"""Period files on disk: writing one to bytes, reading one back with every check, moving a bad one aside.

Shared by the writing :class:`~trio_klines.store.dataset.Store` and the read-only
:func:`~trio_klines.store.reading.load` and :func:`~trio_klines.store.coverage.coverage`. A file the
store wrote is complete the instant it is visible, so any file that fails to read back (truncated, a
failed page checksum, the wrong schema or series, rows outside its period or off the interval's grid) is
corrupt: it is moved to ``ROOT/_quarantine/`` and an error is logged, never deleted.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, NamedTuple, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..core.markets import INTERVALS, Series, floor_open_time, is_open_time, next_open_time
from ..core.timefmt import iso_ms
from ..errors import CorruptFile, StoreError
from .compaction import FileInfo, open_times, redundant_files
from .fileops import FileOps
from .layout import (
    MAX_ROWS_PER_FILE,
    QUARANTINE_DIR,
    FileName,
    is_temp_name,
    parse_series_dir,
    period_bounds,
    series_dir,
)
from .tables import EXACT_SCHEMA, SCHEMA

__all__ = [
    "QuarantinedFile",
    "iter_series_dirs",
    "list_series_dir",
    "live_files",
    "mixed_numbers",
    "partition_links",
    "quarantine",
    "quarantined_files",
    "quarantined_names",
    "read_file",
    "read_footer",
    "read_parquet_bytes",
    "refuse_links",
    "serialize",
    "with_quarantine",
]

logger = logging.getLogger("trio_klines.store")

#: Key of the footer metadata naming the file's series, so a file that wanders is recognised.
SERIES_KEY: Final = b"trio_klines.series"
#: Key of the footer metadata giving the file's first and last open times and whether it is packed. Read
#: instead of the column statistics and codec: pyarrow aborts the process (a C++ exception it does not
#: catch) when those are garbled by a flipped bit, and a bad file must be quarantined, not kill the writer.
SPAN_KEY: Final = b"trio_klines.span"
_QUARANTINE_SUFFIX: Final = ".quarantined"

_T = TypeVar("_T")
_warned: set[Path] = set()


def _warn_once(path: Path, why: str, level: int = logging.WARNING) -> None:
    """Log a foreign entry once per process, not at every read."""
    if path not in _warned:
        _warned.add(path)
        logger.log(level, "ignoring %s: %s", path, why)


_LINK_REFUSED: Final = "a symbolic link: refused, the store follows none (it could lead outside the data directory)"


def refuse_links(root: Path, path: Path) -> None:
    """Raise :class:`StoreError` if ``path`` (under ``root``) or a directory between them is a symbolic link.

    The store reads and writes only inside its root: a link could make it quarantine, overwrite or read
    another directory's files, or a series' files through another series' name.
    """
    current = root
    for part in path.relative_to(root).parts:
        current = current / part
        if current.is_symlink():
            raise StoreError(f"{current} is {_LINK_REFUSED}")


@functools.lru_cache(maxsize=65_536)  # a JSON dump per file written or read, the same few per series
def _series_tag(series: Series) -> bytes:
    return json.dumps({"market": series.market, "symbol": series.symbol, "interval": series.interval}).encode()


def serialize(table: pa.Table, series: Series, *, packed: bool = True) -> pa.Buffer:
    """``table`` (in :data:`~trio_klines.store.tables.SCHEMA`) as the bytes of a period file of ``series``.

    ``packed``: zstd, the smallest option measured on kline data, for files that take no more rows;
    otherwise snappy, for a segment still growing (rewritten at every seal): 60 % less CPU for 30 % more
    bytes, until it is packed. Page checksums let a reader detect a flipped bit instead of returning a
    wrong candle. The footer's :data:`SPAN_KEY` gives the file's range without reading its rows; the open
    times' statistics are written for raw readers' filters (the store does not read them, see SPAN_KEY).
    """
    times = open_times(table)
    span = {"first": int(times[0]), "last": int(times[-1]), "packed": packed} if times.size else {}
    table = table.replace_schema_metadata({SERIES_KEY: _series_tag(series), SPAN_KEY: json.dumps(span).encode()})
    sink = pa.BufferOutputStream()
    pq.write_table(
        table,
        sink,
        row_group_size=MAX_ROWS_PER_FILE,
        compression="zstd" if packed else "snappy",
        compression_level=-1 if packed else None,
        use_dictionary=False,
        write_statistics=["candle_begin_time"],
        write_page_checksum=True,
    )
    return sink.getvalue()


def list_series_dir(directory: Path) -> list[FileName]:
    """The period files in ``directory`` (none if it does not exist), oldest append first.

    Temporary files and names that are not ours are skipped: the store never reads what it did not write;
    nor a symbolic link (error logged) or anything else that is not a regular file.
    """
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return []
    names = []
    for entry in entries:
        name = FileName.parse(entry.name)
        if name is not None and entry.is_symlink():
            _warn_once(directory / entry.name, _LINK_REFUSED, logging.ERROR)
        elif name is not None and not entry.is_file(follow_symlinks=False):
            _warn_once(directory / entry.name, "not a regular file")
        elif name is not None:
            names.append(name)
        elif not is_temp_name(entry.name):
            _warn_once(directory / entry.name, "not a file the store writes")
    names.sort(key=lambda n: (n.period, n.hi))
    return names


def live_files(directory: Path) -> list[FileName]:
    """The files in ``directory`` that hold the series' rows, oldest append first: every period file but the
    inputs of an interrupted merge (their rows are in its output)."""
    names = list_series_dir(directory)
    redundant = set(redundant_files(names))
    return [name for name in names if name not in redundant]


def _check_schema(
    schema: pa.Schema, series: Series, path: Path, columns: list[str] | None, wanted: pa.Schema | None
) -> None:
    """Raise :class:`CorruptFile` unless ``schema`` is ``wanted`` (``None``: either numbers' schema), or its
    ``columns``, and names ``series``; :class:`StoreError` for a file of the other numbers than ``wanted``.

    A file of the other numbers is whole and readable: it is not quarantined, the read stops instead
    (a dataset never mixes both, so one got there by hand, or the dataset marker was changed).
    """
    bare = schema.remove_metadata()
    for candidate in (SCHEMA, EXACT_SCHEMA) if wanted is None else (wanted, _other(wanted)):
        expected = candidate if columns is None else pa.schema([candidate.field(c) for c in columns])
        if bare.equals(expected):
            if wanted is not None and candidate is not wanted:
                raise mixed_numbers(path, "exact" if candidate is EXACT_SCHEMA else "float")
            break
    else:
        raise CorruptFile(path, f"unexpected schema {bare}")
    tag = (schema.metadata or {}).get(SERIES_KEY)
    if tag != _series_tag(series):
        raise CorruptFile(path, f"file belongs to series {tag!r}, not {series}")


def _check_times(series: Series, name: FileName, first: int, last: int, rows: int, path: Path) -> None:
    start, end = period_bounds(series.interval, name.period)
    on_grid = is_open_time(series.interval, first) and is_open_time(series.interval, last)
    if not (start <= first <= last < end and on_grid):
        raise CorruptFile(
            path, f"open times {iso_ms(first)}..{iso_ms(last)} do not fit period {name.period} of {series.interval}"
        )
    length = INTERVALS[series.interval]
    span = (last - first) // length + 1 if length else rows  # 1M: at most 12 rows a year, nothing to gain
    if not 0 < rows <= span:
        raise CorruptFile(path, f"{rows} rows cannot be unique open times in {iso_ms(first)}..{iso_ms(last)}")


def mixed_numbers(path: Path, held: str) -> StoreError:
    """The error for a file that holds ``held`` numbers in a dataset of the other ones."""
    other = "float" if held == "exact" else "exact"
    return StoreError(
        f"{path} holds {held} numbers but its dataset {other} ones (ROOT/_dataset.json): a dataset never mixes "
        "both; move the file out of the data directory, or if the marker was lost, run `python -m trio_klines "
        "compact`, which restores it from the files"
    )


def _other(schema: pa.Schema) -> pa.Schema:
    return SCHEMA if schema is EXACT_SCHEMA else EXACT_SCHEMA


def read_footer(path: Path, series: Series, name: FileName, *, schema: pa.Schema | None = SCHEMA) -> FileInfo:
    """Rows and first/last open time of a period file, from its footer alone (about 100 µs).

    A file of an older release, whose footer has no :data:`SPAN_KEY`, has its open times read instead.
    ``schema``: the dataset's (:func:`~trio_klines.store.tables.schema_for`), ``None`` for either.
    Raises :class:`CorruptFile`, :class:`FileNotFoundError` or another :class:`OSError` (``EIO``…), and
    :class:`StoreError` for a file of the other numbers.
    """
    wanted = schema
    try:
        meta = pq.read_metadata(path)
        schema = meta.schema.to_arrow_schema()
        rows = meta.num_rows
    except UnicodeDecodeError as exc:  # a garbled name in the footer
        raise CorruptFile(path, f"unreadable footer: {exc}") from exc
    except (OSError, pa.ArrowException) as exc:
        # pyarrow reports parse errors as OSErrors without errno; with one it is the disk, not the file.
        if isinstance(exc, OSError) and exc.errno is not None:
            raise
        raise CorruptFile(path, f"unreadable footer: {exc}") from exc
    _check_schema(schema, series, path, None, wanted)
    span = _span(schema, path)
    if span is None:
        times = open_times(read_file(path, series, name, ["candle_begin_time"]))
        span = (int(times[0]), int(times[-1]), True)  # older releases packed every file
    first, last, packed = span
    _check_times(series, name, first, last, rows, path)
    return FileInfo(name, rows, first, last, packed)


def _span(schema: pa.Schema, path: Path) -> tuple[int, int, bool] | None:
    """The first and last open times and the packing a footer's :data:`SPAN_KEY` gives; ``None`` if it has
    none (an older release's file)."""
    raw = (schema.metadata or {}).get(SPAN_KEY)
    if raw is None:
        return None
    try:
        span = json.loads(raw)
        first, last, packed = span["first"], span["last"], span["packed"]
    except (ValueError, TypeError, KeyError) as exc:
        raise CorruptFile(path, f"unreadable span in the footer: {exc}") from exc
    if type(first) is not int or type(last) is not int or type(packed) is not bool:
        raise CorruptFile(path, f"unreadable span in the footer: {raw!r}")
    return first, last, packed


def read_file(
    path: Path, series: Series, name: FileName, columns: list[str] | None = None, *, schema: pa.Schema = SCHEMA
) -> pa.Table:
    """A period file's rows, every page checksum verified and its open times checked; ``schema``: the
    dataset's (:func:`~trio_klines.store.tables.schema_for`).

    Raises :class:`CorruptFile`, :class:`FileNotFoundError` or another :class:`OSError` (``EIO``…), and
    :class:`StoreError` for a file of the other numbers.
    """
    try:
        table = read_parquet_bytes(path, columns)
    except UnicodeDecodeError as exc:  # a garbled name in the footer
        raise CorruptFile(path, f"unreadable: {exc}") from exc
    except (OSError, pa.ArrowException) as exc:
        if isinstance(exc, OSError) and exc.errno is not None:
            raise
        raise CorruptFile(path, f"unreadable: {exc}") from exc
    _check_schema(table.schema, series, path, columns, schema)
    times = open_times(table)
    if times.size == 0 or (times.size > 1 and not bool(np.all(times[1:] > times[:-1]))):
        raise CorruptFile(path, "open times are not sorted and unique")
    _check_times(series, name, int(times[0]), int(times[-1]), times.size, path)
    span = _span(table.schema, path)
    if span is not None and span[:2] != (int(times[0]), int(times[-1])):
        raise CorruptFile(
            path,
            f"open times {iso_ms(int(times[0]))}..{iso_ms(int(times[-1]))} differ from the footer's "
            f"{iso_ms(span[0])}..{iso_ms(span[1])}",
        )
    if series.interval != "1M":
        length = INTERVALS[series.interval] or 0
        if bool(np.any((times - floor_open_time(series.interval, 0)) % length)):
            raise CorruptFile(path, f"open times off the {series.interval} grid")
    return table


def read_parquet_bytes(path: Path, columns: list[str] | None = None) -> pa.Table:
    """The Parquet file at ``path``, every page checksum verified, read in one ``read`` call and decoded on
    this thread: 2.4x less CPU than pyarrow's path-based reader for the small files a seal reads back
    (its file-system lookup and thread pool cost more than decoding a few hundred rows)."""
    with open(path, "rb") as file:
        data = file.read()
    parquet = pq.ParquetFile(pa.BufferReader(data), page_checksum_verification=True)
    return parquet.read(columns=columns, use_threads=False)


def quarantine(root: Path, path: Path, reason: str, ops: FileOps) -> bool:
    """Move the corrupt file ``path`` to ``ROOT/_quarantine/<same relative path>.quarantined``.

    Logs an error either way; never raises. Returns whether ``path`` is out of the store now (moved,
    or already gone because another process moved it).
    """
    relative = path.relative_to(root)
    target = root / QUARANTINE_DIR / relative.parent / (relative.name + _QUARANTINE_SUFFIX)
    try:
        refuse_links(root, target.parent)
    except StoreError as exc:
        logger.error("corrupt file %s (%s) could not be moved to quarantine (%s); skipping it", path, reason, exc)
        return False
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    if target.exists():
        target = target.with_name(f"{relative.name}.{stamp}{_QUARANTINE_SUFFIX}")
    try:
        ops.makedirs(target.parent)
        ops.rename(path, target)
        ops.fsync_dir(target.parent)
        ops.fsync_dir(path.parent)
    except OSError as exc:
        if not path.exists():  # moved (by us, before a failed sync, or by another process)
            logger.error("corrupt file %s (%s) is out of the store (%s)", path, reason, exc)
            return True
        logger.error("corrupt file %s (%s) could not be moved to quarantine (%s); skipping it", path, reason, exc)
        return False
    logger.error("corrupt file %s moved to %s: %s", path, target, reason)
    return True


def with_quarantine(root: Path, ops: FileOps, read: Callable[[], _T]) -> _T | None:
    """``read()``, or ``None`` after moving the file it found corrupt to quarantine."""
    try:
        return read()
    except CorruptFile as exc:
        quarantine(root, exc.path, exc.reason, ops)
        return None


class QuarantinedFile(NamedTuple):
    """A file of a series in quarantine: ``path`` (under ``ROOT/_quarantine/``), the ``name`` it had, and the
    open times of the ``first`` and ``last`` candles it held, read from its footer when that is intact
    (``exact``), else the first and last open times of its period (it held candles there, at most all)."""

    path: Path
    name: FileName
    first: int
    last: int
    exact: bool


def _quarantine_entries(root: Path, series: Series) -> list[tuple[Path, FileName]]:
    """The files of ``series`` in quarantine and the names they had; none if the quarantine is a link."""
    directory = root.joinpath(QUARANTINE_DIR, *series_dir(series))
    try:
        refuse_links(root, directory)
        entries = os.listdir(directory)
    except FileNotFoundError:
        return []
    except StoreError as exc:
        _warn_once(root / QUARANTINE_DIR, str(exc), logging.ERROR)
        return []
    found = []
    for entry in sorted(entries):
        base = entry.removesuffix(_QUARANTINE_SUFFIX)
        name = FileName.parse(base.split(".")[0] + ".parquet") if base != entry else None
        if name is not None:
            found.append((directory / entry, name))
    return found


def quarantined_names(root: Path, series: Series) -> list[FileName]:
    """Names of the files of ``series`` in quarantine, so sequence numbers are never reused."""
    return [name for _, name in _quarantine_entries(root, series)]


def quarantined_files(root: Path, series: Series) -> list[QuarantinedFile]:
    """The files of ``series`` in quarantine, with the range of open times each held (see
    :class:`QuarantinedFile`), oldest period first. Never raises for what the files hold."""
    found = []
    for path, name in _quarantine_entries(root, series):
        try:
            info = None if path.is_symlink() else read_footer(path, series, name, schema=None)
        except (StoreError, OSError):  # truncated, garbled footer, a directory…: its period tells
            info = None
        if info is not None:
            found.append(QuarantinedFile(path, name, info.first, info.last, exact=True))
        elif (bounds := _period_open_times(series.interval, name.period)) is not None:
            found.append(QuarantinedFile(path, name, *bounds, exact=False))
    found.sort(key=lambda q: (q.first, q.name.hi))
    return found


def _period_open_times(interval: str, period: str) -> tuple[int, int] | None:
    """The first and last open times of ``interval`` within ``period``, or ``None`` if it holds none."""
    try:
        start, end = period_bounds(interval, period)
    except ValueError:  # a name of another unit (the file belongs elsewhere): its series cannot hold it
        return None
    first = floor_open_time(interval, start)
    if first < start:
        first = next_open_time(interval, first)
    last = floor_open_time(interval, end - 1)
    return (first, last) if first <= last else None


def iter_series_dirs(root: Path) -> Iterator[tuple[Series, Path]]:
    """Every ``market=…/interval=…/symbol=…`` directory under ``root`` and its series, sorted.

    Directories starting with ``_`` or ``.`` (quarantine) are not series; a symbolic link is refused (error
    logged, never followed) and anything else that is not a directory the store makes is logged and skipped.
    """
    found = []
    for market_dir in _subdirs(root):
        for interval_dir in _subdirs(market_dir):
            for symbol_dir in _subdirs(interval_dir):
                series = parse_series_dir(market_dir.name, interval_dir.name, symbol_dir.name)
                if series is None:
                    _warn_once(symbol_dir, "not a series directory the store makes")
                else:
                    found.append((series, symbol_dir))
    return iter(sorted(found))


def partition_links(root: Path) -> list[Path]:
    """The symbolic links among the partition directories under ``root`` and under its quarantine (and the
    quarantine itself if it is one): what a writing store refuses to open with."""
    quarantine_dir = root / QUARANTINE_DIR
    if quarantine_dir.is_symlink():
        return [quarantine_dir]
    links = []
    for base in (root, quarantine_dir):
        level = [base]
        for prefix in ("market=", "interval=", "symbol="):
            below = []
            for directory in level:
                try:
                    entries = list(os.scandir(directory))
                except (FileNotFoundError, NotADirectoryError):
                    continue
                for entry in entries:
                    if entry.name.startswith(prefix) and entry.is_symlink():
                        links.append(Path(entry.path))
                    elif entry.name.startswith(prefix) and entry.is_dir(follow_symlinks=False):
                        below.append(Path(entry.path))
            level = below
    return sorted(links)


def _subdirs(directory: Path) -> list[Path]:
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except FileNotFoundError:
        return []
    found = []
    for entry in entries:
        if entry.name.startswith(("_", ".")):
            continue
        if entry.is_symlink():
            _warn_once(Path(entry.path), _LINK_REFUSED, logging.ERROR)
        elif entry.is_dir(follow_symlinks=False):
            found.append(Path(entry.path))
    return found
