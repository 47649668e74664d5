"""The data archive's CSVs read straight into the store's tables: vectorised, checked, a block at a time.

:func:`trio_klines.core.archive.parse_archive_csv` turns a file into :class:`~trio_klines.core.parse.Candle`
objects (the reference, a few µs per row); an archive bootstrap reads hundreds of millions of rows, so
this reader parses with pyarrow's CSV reader into columns and checks them with numpy, a block of rows
at a time (memory stays bounded however large the file). It accepts exactly what the reference accepts
and gives the same values: pyarrow and Python both round a decimal string to the nearest float64, and
tests hold the two readers to each other on every real archive file and on generated ones.

In a dataset of exact numbers (``numbers="exact"``) the values are read as the strings the file holds and
cast to decimals after the same shape check as the exact parsers' (:func:`~trio_klines.store.tables.decimal_problem`),
so the archive stores the digits REST and the WebSocket send; their order is compared as decimals.

Checked per row, as the REST parser checks a row: whole-number times (µs from spot's 2025 files, made
ms), an open time on the interval's grid within the store's range, a close time within the candle,
values that are finite numbers in range and in order, and a trade count that fits. The first row that
fails names its line; nothing of a file that fails is meant to be stored, so callers store a file's
blocks only after the whole file was read (or drop what they stored of it, which they never need:
every block is checked before it is returned, and a later block failing leaves the earlier ones valid).
"""

from __future__ import annotations

import io
import zipfile
import zlib
from collections.abc import Iterator
from typing import IO, Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from ..core.archive import ARCHIVE_HEADER
from ..core.markets import INTERVALS, Market, floor_open_time, get_market, normalize_symbol, validate_interval
from ..core.timefmt import iso_ms
from ..core.validity import MAX_COUNT, MAX_OPEN_TIME, MAX_VALUE
from ..errors import ConfigError, MalformedMessage
from .compaction import open_times, sort_unique
from .tables import SCHEMA, decimal_column, decimal_problem, schema_for

__all__ = ["BLOCK_SIZE", "read_archive_csv", "read_archive_zip", "select_wanted", "table_problem", "values_problem"]

#: Bytes of CSV text parsed at a time: ~9,000 rows of spot 1m. Larger blocks cost no less per row.
BLOCK_SIZE: Final = 1 << 20
_MICROS: Final = 10**14  # a time at or above this is µs (as the WebSocket and REST parsers decide)
_NAMES: Final = (
    "open_time", "open", "high", "low", "close", "volume", "close_time", "quote_volume", "count",
    "taker_buy_base", "taker_buy_quote", "ignore",
)  # fmt: skip
_VALUES: Final = ("open", "high", "low", "close", "volume", "quote_volume", "taker_buy_base", "taker_buy_quote")
_TYPES: Final = {"open_time": pa.int64(), "close_time": pa.int64(), "count": pa.int64()} | {
    name: pa.float64() for name in _VALUES
}
_CONVERT: Final = pacsv.ConvertOptions(
    column_types=_TYPES,
    include_columns=list(_NAMES[:11]),
    null_values=[""],  # only an empty field is missing; "nan" is a float, refused as not finite
    strings_can_be_null=False,
    quoted_strings_can_be_null=False,
)
#: Exact numbers: the values as the file's text (an empty one is null, as above).
_CONVERT_EXACT: Final = pacsv.ConvertOptions(
    column_types=_TYPES | {name: pa.string() for name in _VALUES},
    include_columns=list(_NAMES[:11]),
    null_values=[""],
    strings_can_be_null=True,
    quoted_strings_can_be_null=True,
)
#: The store's names of the value columns, in :data:`_VALUES`' order.
_STORED_VALUES: Final = ("open", "high", "low", "close", "volume", "quote_volume",
                         "taker_buy_base_asset_volume", "taker_buy_quote_asset_volume")  # fmt: skip
_PARSE: Final = pacsv.ParseOptions(delimiter=",")


def read_archive_csv(
    source: bytes | IO[bytes],
    market: Market | str,
    symbol: str,
    interval: str,
    *,
    block_size: int = BLOCK_SIZE,
    numbers: str = "float",
) -> Iterator[pa.Table]:
    """The rows of an archive CSV (bytes, or a binary file positioned at its start) as tables in the
    schema of a dataset of ``numbers`` (:func:`~trio_klines.store.tables.schema_for`), a block at a time,
    in file order.

    Raises :class:`MalformedMessage` naming the line of the first row that is not a valid candle of
    the series (a block before it has been yielded already); :class:`ConfigError` for a bad series.
    """
    m = market if isinstance(market, Market) else get_market(market)
    symbol = normalize_symbol(symbol)
    interval = validate_interval(m, interval)
    schema = schema_for(numbers)
    if INTERVALS[interval] is None:
        raise ConfigError("the archive is not used for 1M candles: they come over REST")
    stream: IO[bytes] = io.BytesIO(source) if isinstance(source, bytes | bytearray) else source
    head = stream.read(len(ARCHIVE_HEADER))
    # The header line is skipped by the reader (skip_rows), so the stream is read from its start again.
    skip = 1 if head == ARCHIVE_HEADER.encode() else 0
    # Buffered: pyarrow takes a short read for the end of the file, and a raw read may return only the head.
    prefixed = io.BufferedReader(_Prefixed(head, stream), buffer_size=max(block_size, io.DEFAULT_BUFFER_SIZE))
    options = pacsv.ReadOptions(column_names=list(_NAMES), skip_rows=skip, block_size=block_size, use_threads=False)
    try:
        convert = _CONVERT if schema is SCHEMA else _CONVERT_EXACT
        reader = pacsv.open_csv(prefixed, read_options=options, parse_options=_PARSE, convert_options=convert)
    except pa.ArrowInvalid as exc:
        if "Empty CSV file" in str(exc):
            return
        raise MalformedMessage(f"archive CSV line {skip + 1}: {_first_line(exc)}") from None
    line = skip + 1
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            return
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise MalformedMessage(f"archive CSV after line {line - 1}: {_first_line(exc)}") from None
        table, problem, row = _convert(interval, batch, schema)
        if problem is not None:
            raise MalformedMessage(f"archive CSV line {line + row}: {problem}")
        line += batch.num_rows
        yield table


def read_archive_zip(
    source: IO[bytes], csv_name: str, market: Market | str, symbol: str, interval: str, *, numbers: str = "float"
) -> list[pa.Table]:
    """The rows of an archive zip (a binary file) holding the one CSV ``csv_name``, as store tables of a
    dataset of ``numbers``.

    The whole file is read, its CRC-32 checked at the end, before anything is returned: a file that
    fails anywhere gives no rows. Raises :class:`MalformedMessage` for a broken zip (truncated, a bad
    CRC, not the one member expected) or a CSV row that is not a candle (see :func:`read_archive_csv`).
    """
    try:
        with zipfile.ZipFile(source) as archive:
            names = archive.namelist()
            if names != [csv_name]:
                raise MalformedMessage(f"zip holds {names[:3]!r}, not the one file {csv_name!r}")
            with archive.open(csv_name) as member:
                tables = list(read_archive_csv(member, market, symbol, interval, numbers=numbers))
                if member.read(1):  # pragma: no cover - the reader stops only at the end
                    raise MalformedMessage(f"{csv_name}: not read to its end")
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, OSError, ValueError) as exc:
        if isinstance(exc, MalformedMessage | ConfigError):
            raise
        raise MalformedMessage(f"broken zip: {type(exc).__name__}: {exc}") from None
    return tables


def select_wanted(
    interval: str, tables: list[pa.Table], wanted: tuple[tuple[int, int], ...], schema: pa.Schema = SCHEMA
) -> tuple[pa.Table, list[tuple[int, int]]]:
    """The rows of ``tables`` (one file's, in the store's schema) opening in the ``wanted`` ranges, one
    row per open time (the last), sorted; and the runs ``[a, b)`` of open times in those ranges that
    no row has (where the file lacks candles: exchange gaps, or not)."""
    length = INTERVALS[interval]
    assert length is not None
    table = pa.concat_tables(tables).combine_chunks() if tables else schema.empty_table()
    times = open_times(table)
    keep = np.zeros(times.size, dtype=bool)
    for lo, hi in wanted:
        keep |= (times >= lo) & (times < hi)
    if not keep.all():
        table = table.filter(pa.array(keep))
    table = sort_unique(table)  # of a repeated open time the last row wins, as everywhere in the store
    sorted_times = open_times(table)
    absent: list[tuple[int, int]] = []
    for lo, hi in wanted:
        first = _ceil(interval, lo)
        inside = sorted_times[(sorted_times >= lo) & (sorted_times < hi)]
        edges = np.concatenate(([first - length], inside, [_ceil(interval, hi)]))
        for i in np.flatnonzero(np.diff(edges) > length).tolist():
            absent.append((int(edges[i]) + length, int(edges[i + 1])))
    return table, absent


def _ceil(interval: str, t: int) -> int:
    """The first open time at or after ``t``."""
    length = INTERVALS[interval]
    assert length is not None
    floor = floor_open_time(interval, t)
    return floor if floor == t else floor + length


def _convert(interval: str, batch: pa.RecordBatch, schema: pa.Schema) -> tuple[pa.Table, str | None, int]:
    """A block as a store table in ``schema``, or the problem of its first bad row and that row's index."""
    columns = {name: batch.column(name) for name in _NAMES[:11]}
    for name, column in columns.items():
        if column.null_count:
            return pa.table({}), f"{name} is empty", _first(~np.asarray(column.is_valid()))
    t = columns["open_time"].to_numpy()
    close = columns["close_time"].to_numpy()
    micros = t >= _MICROS
    if micros.any():
        if (bad := micros & (t % 1000 != 0)).any():
            return pa.table({}), "open time in µs is not a whole millisecond", _first(bad)
        t = np.where(micros, t // 1000, t)
        close = np.where(close >= _MICROS, close // 1000, close)
    length = INTERVALS[interval]
    assert length is not None
    ends = t + length
    bad_close = ~((t <= close) & (close < ends))
    if bad_close.any():
        i = _first(bad_close)
        return pa.table({}), (f"close time {iso_ms(int(close[i]))} outside the {interval} candle opening at "
                              f"{iso_ms(int(t[i]))}"), i
    if schema is not SCHEMA:
        for short, name in zip(_VALUES, _STORED_VALUES, strict=True):
            try:
                columns[short] = decimal_column(name, columns[short])
            except ValueError as exc:  # which row: the slower check that names it
                row, why = decimal_problem(name, columns[short]) or (0, str(exc))
                return pa.table({}), why, row
    count = columns["count"].to_numpy()
    stored = ("open", "high", "low", "close", "volume", "quote_volume", "count", "taker_buy_base", "taker_buy_quote")
    times = pa.array(t.astype("datetime64[ms]"), SCHEMA.field("candle_begin_time").type)
    table = pa.Table.from_arrays([times] + [columns[name] for name in stored], schema=schema)
    problem, row = _rows_problem(interval, t, _value_checks({name: columns[name] for name in _VALUES}), count)
    return table, problem, row


def table_problem(interval: str, table: pa.Table, *, numbers: str = "float") -> str | None:
    """Why a table in the schema of a dataset of ``numbers`` does not hold valid candles of ``interval``
    (the rules of :mod:`trio_klines.core.validity`, vectorised), or ``None``."""
    if table.schema != schema_for(numbers):
        return f"not the schema of a dataset of {numbers} numbers: " + ", ".join(
            f"{f.name} {f.type}{'' if f.nullable else ' not null'}" for f in table.schema)  # fmt: skip
    if interval not in INTERVALS or INTERVALS[interval] is None:
        return f"interval {interval!r} is not stored from tables"
    if any(column.null_count for column in table.columns):
        return "a value is missing"
    t = table.column("candle_begin_time").cast(pa.int64()).to_numpy()
    problem, _ = _rows_problem(interval, t, _value_checks(_value_columns(table)), table.column("trade_num").to_numpy())
    return problem


def values_problem(table: pa.Table) -> str | None:
    """Why the prices and volumes of a table in either numbers' schema (any series) are not valid candles'
    (:func:`table_problem`'s value rules alone), or ``None``."""
    for ok, what in _value_checks(_value_columns(table)):
        if not ok.all():
            return what
    return None


def _value_columns(table: pa.Table) -> dict[str, pa.Array]:
    """A store table's value columns, by the CSV's short names."""
    return {short: table.column(name).combine_chunks() for short, name in zip(_VALUES, _STORED_VALUES, strict=True)}


def _value_checks(columns: dict[str, pa.Array]) -> list[tuple[np.ndarray, str]]:
    """The value rules as row masks (true: fine): numpy over float64 columns, Arrow's exact comparisons over
    decimal ones (as floats, two different decimals may tie)."""
    if pa.types.is_decimal(columns["open"].type):
        zero = pa.scalar(0, columns["open"].type)
        c = columns

        def mask(*conditions: pa.Array) -> np.ndarray:
            both = conditions[0]
            for condition in conditions[1:]:
                both = pc.and_(both, condition)
            return np.asarray(both.to_numpy(zero_copy_only=False), dtype=bool)

        le = pc.less_equal
        in_range = mask(pc.greater_equal(c["low"], zero), pc.greater_equal(c["taker_buy_base"], zero),
                        pc.greater_equal(c["taker_buy_quote"], zero))  # decimals fit MAX_VALUE by their type
        prices = mask(le(c["low"], c["open"]), le(c["open"], c["high"]), le(c["low"], c["close"]),
                      le(c["close"], c["high"]))
        taker = mask(le(c["taker_buy_base"], c["volume"]), le(c["taker_buy_quote"], c["quote_volume"]))
    else:
        v = {name: column.to_numpy() for name, column in columns.items()}
        in_range = ((v["low"] >= 0.0) & (v["high"] <= MAX_VALUE) & (v["volume"] <= MAX_VALUE)
                    & (v["quote_volume"] <= MAX_VALUE) & (v["taker_buy_base"] >= 0.0) & (v["taker_buy_quote"] >= 0.0))
        prices = ((v["low"] <= v["open"]) & (v["open"] <= v["high"])
                  & (v["low"] <= v["close"]) & (v["close"] <= v["high"]))
        taker = (v["taker_buy_base"] <= v["volume"]) & (v["taker_buy_quote"] <= v["quote_volume"])
    return [(in_range, "a value is not a finite number in range"), (prices, "prices out of order"),
            (taker, "taker-buy volumes exceed the volumes")]  # fmt: skip


def _rows_problem(
    interval: str, t: np.ndarray, values: list[tuple[np.ndarray, str]], count: np.ndarray
) -> tuple[str | None, int]:
    length = INTERVALS[interval]
    assert length is not None
    offset = floor_open_time(interval, 0) % length
    checks = (
        ((t >= 0) & (t < MAX_OPEN_TIME), "open time outside 1970-9999"),
        ((t - offset) % length == 0, f"open time not a {interval} boundary"),
        ((count >= 0) & (count <= MAX_COUNT), "trade count out of range"),
        *values,
    )  # fmt: skip
    for ok, what in checks:
        if not ok.all():
            i = _first(~ok)
            return f"{what} (open time {iso_ms(int(t[i]))})", i
    return None, 0


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


class _Prefixed(io.RawIOBase):
    """``head`` (bytes already read) followed by the rest of ``stream``: a peek without seeking."""

    def __init__(self, head: bytes, stream: IO[bytes]) -> None:
        self._head = memoryview(head)
        self._stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self._head:
            n = min(len(buffer), len(self._head))
            buffer[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._stream.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)
