"""Batches of candles as Arrow tables (the store's schema) and as the seed-shaped pandas DataFrame.

The seed recorder's DataFrame, which users' research code already expects, is indexed by
``candle_end_time`` (begin + interval, UTC) with the columns of :data:`COLUMNS` in that order.

Exact values (a dataset whose ``numbers`` are ``exact``): :data:`EXACT_SCHEMA` holds prices and volumes as
``decimal128(30, 12)``, built from the exact parsers' decimal strings by Arrow's string cast (exact, 0.04
µs a value). Back to float64 they go through their decimal text (:func:`exact_to_float`): Arrow's direct
decimal-to-float64 cast is not correctly rounded (12,173 of the 148,864 real values of
``../shared/realdata`` come out one ulp off ``float(text)``), the text route is.
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import attrgetter
from typing import Final

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ..core.decimals import NUMBERS, VALUE_SHAPE
from ..core.markets import INTERVALS, interval_ms
from ..core.parse import Candle
from ..core.validity import EXACT_FRACTION_DIGITS, EXACT_VALUE, EXACT_WHOLE_DIGITS

__all__ = [
    "COLUMNS",
    "EXACT_SCHEMA",
    "EXACT_TYPE",
    "NUMBERS",
    "SCHEMA",
    "SERIES_COLUMNS",
    "candles_to_dataframe",
    "candles_to_table",
    "decimal_column",
    "decimal_problem",
    "exact_to_float",
    "schema_for",
    "table_to_dataframe",
]

#: Value columns, in the seed's order.
COLUMNS: Final = (
    "candle_begin_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "quote_volume",
    "trade_num",
    "taker_buy_base_asset_volume",
    "taker_buy_quote_asset_volume",
)
#: Columns naming the series; in the store they are Hive partition keys, not stored in the files.
SERIES_COLUMNS: Final = ("market", "symbol", "interval")

_FLOATS: Final = ("open", "high", "low", "close", "volume", "quote_volume")
_TAKER: Final = ("taker_buy_base_asset_volume", "taker_buy_quote_asset_volume")

#: The store's file schema.
SCHEMA: Final = pa.schema(
    [pa.field("candle_begin_time", pa.timestamp("ms", tz="UTC"), nullable=False)]
    + [pa.field(name, pa.float64(), nullable=False) for name in _FLOATS]
    + [pa.field("trade_num", pa.int64(), nullable=False)]
    + [pa.field(name, pa.float64(), nullable=False) for name in _TAKER]
)
_SERIES_FIELDS: Final = [pa.field(name, pa.string(), nullable=False) for name in SERIES_COLUMNS]
_VALUES: Final = (*_FLOATS, *_TAKER)

#: Exact prices and volumes: 12 digits after the dot, 18 before (see core.validity.EXACT_WHOLE_DIGITS).
EXACT_TYPE: Final = pa.decimal128(EXACT_WHOLE_DIGITS + EXACT_FRACTION_DIGITS, EXACT_FRACTION_DIGITS)
#: :data:`SCHEMA` with :data:`EXACT_TYPE` prices and volumes.
EXACT_SCHEMA: Final = pa.schema([pa.field(f.name, EXACT_TYPE, nullable=False) if f.name in _VALUES else f
                                  for f in SCHEMA])  # fmt: skip
#: What the exact parsers take as a value (core.parse): ASCII digits with at most one dot...
_DECIMAL_TEXT: Final = f"^{VALUE_SHAPE}$"
#: ... and within the digits :data:`EXACT_TYPE` holds (a shape too: one pass checks both).
_FITS: Final = f"^{EXACT_VALUE}$"


def schema_for(numbers: str) -> pa.Schema:
    """The file schema of a dataset whose ``numbers`` are ``float`` or ``exact``; ``ValueError`` otherwise."""
    if numbers not in NUMBERS:
        raise ValueError(f"numbers must be one of {', '.join(NUMBERS)}, not {numbers!r}")
    return EXACT_SCHEMA if numbers == "exact" else SCHEMA


def candles_to_table(candles: Sequence[Candle], *, with_series: bool = False, numbers: str = "float") -> pa.Table:
    """``candles`` as a table in :data:`SCHEMA` (``numbers="exact"``: :data:`EXACT_SCHEMA`, from candles of the
    exact parsers, whose values are decimal strings), in the given order.

    With ``with_series`` the table starts with ``market``, ``symbol`` and ``interval`` columns, for
    batches that mix series. Raises ``ValueError`` for an exact value that is not a decimal string or does
    not fit :data:`EXACT_TYPE`, naming it.
    """
    if schema_for(numbers) is EXACT_SCHEMA:
        return _exact_table(candles, with_series)
    arrays: list[pa.Array] = []
    fields: list[pa.Field] = []
    if with_series:
        arrays += [
            pa.array([c.market for c in candles], pa.string()),
            pa.array([c.symbol for c in candles], pa.string()),
            pa.array([c.interval for c in candles], pa.string()),
        ]
        fields += _SERIES_FIELDS
    arrays += [
        pa.array([c.open_time for c in candles], pa.int64()).cast(SCHEMA.field(0).type),
        pa.array([c.open for c in candles], pa.float64()),
        pa.array([c.high for c in candles], pa.float64()),
        pa.array([c.low for c in candles], pa.float64()),
        pa.array([c.close for c in candles], pa.float64()),
        pa.array([c.volume for c in candles], pa.float64()),
        pa.array([c.quote_volume for c in candles], pa.float64()),
        pa.array([c.trade_num for c in candles], pa.int64()),
        pa.array([c.taker_buy_base_asset_volume for c in candles], pa.float64()),
        pa.array([c.taker_buy_quote_asset_volume for c in candles], pa.float64()),
    ]
    fields += list(SCHEMA)
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def _exact_table(candles: Sequence[Candle], with_series: bool) -> pa.Table:
    """:func:`candles_to_table` in :data:`EXACT_SCHEMA`: the same columns, but the values' decimal strings cast."""
    arrays = []
    for name in [*(SERIES_COLUMNS if with_series else ()), *SCHEMA.names]:
        values = list(map(attrgetter("open_time" if name == "candle_begin_time" else name), candles))
        if name in _VALUES:
            arrays.append(_decimal_column(name, values))
        elif name == "candle_begin_time":
            arrays.append(pa.array(values, pa.int64()).cast(SCHEMA.field(0).type))
        else:
            arrays.append(pa.array(values, pa.string() if name in SERIES_COLUMNS else pa.int64()))
    fields = (_SERIES_FIELDS if with_series else []) + list(EXACT_SCHEMA)
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def _decimal_column(name: str, texts: list[object]) -> pa.Array:
    try:
        strings = pa.array(texts, pa.string())
    except (pa.ArrowException, TypeError):
        bad = next(t for t in texts if not isinstance(t, str))
        raise ValueError(f"{name} {bad!r} is not a decimal string (exact values come from the exact parsers)") from None
    return decimal_column(name, strings)


def decimal_column(name: str, strings: pa.Array) -> pa.Array:
    """``strings`` (the values of column ``name``) as :data:`EXACT_TYPE`, exactly; ``ValueError`` naming the
    first that is not a decimal string or does not fit (see :func:`decimal_problem`)."""
    fine = pc.match_substring_regex(strings, _FITS)
    if len(strings) and not pc.all(fine).as_py():
        problem = decimal_problem(name, strings)
        raise ValueError(problem[1] if problem is not None else f"{name}: a value is not a decimal {EXACT_TYPE} holds")
    try:
        return strings.cast(EXACT_TYPE)
    except pa.ArrowInvalid as exc:  # pragma: no cover - decimal_problem refuses what the cast would
        raise ValueError(f"{name}: a value does not fit {EXACT_TYPE} ({exc})") from None


def decimal_problem(name: str, strings: pa.Array) -> tuple[int, str] | None:
    """The first of ``strings`` (column ``name``) that is not a decimal string :data:`EXACT_TYPE` holds: its
    index and why; ``None`` if every one is. Vectorised (Arrow's RE2), about 0.05 µs a value."""
    for pattern, why in ((_DECIMAL_TEXT, "is not a decimal string"),
                         (_FITS, f"does not fit {EXACT_TYPE} ({EXACT_WHOLE_DIGITS} digits before the dot, "
                                 f"{EXACT_FRACTION_DIGITS} after it)")):  # fmt: skip
        matched = pc.match_substring_regex(strings, pattern)
        if len(strings) and not pc.all(matched).as_py():
            index = pc.index(pc.fill_null(matched, False), False).as_py()
            return index, f"{name} {strings[index].as_py()!r} {why}"
    return None


def exact_to_float(table: pa.Table) -> pa.Table:
    """``table`` with its decimal columns as float64, each the float nearest its decimal (as ``float(text)``
    is), through their text: Arrow's direct cast is not correctly rounded."""
    columns = [c.cast(pa.string()).cast(pa.float64()) if pa.types.is_decimal(c.type) else c for c in table.columns]
    fields = [pa.field(f.name, pa.float64(), nullable=f.nullable) if pa.types.is_decimal(f.type) else f
              for f in table.schema]  # fmt: skip
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))


def table_to_dataframe(table: pa.Table, interval: str, *, exact: bool = False) -> pd.DataFrame:
    """A table in :data:`SCHEMA` or :data:`EXACT_SCHEMA` (extra columns ignored) as the seed-shaped DataFrame of
    ``interval``: float64 values, or with ``exact`` (an exact table) ``pd.ArrowDtype`` decimals.

    The index is ``candle_end_time`` = begin + interval (a calendar month for ``1M``), UTC.
    """
    table = table.select(list(COLUMNS))
    if exact:
        frame = table.to_pandas(types_mapper=lambda t: pd.ArrowDtype(t) if pa.types.is_decimal(t) else None)
    elif any(pa.types.is_decimal(t) for t in table.schema.types):
        frame = exact_to_float(table).to_pandas()
    else:
        frame = table.to_pandas()
    begin = frame["candle_begin_time"]
    if begin.dt.tz is None:  # pragma: no cover - SCHEMA always carries UTC
        begin = begin.dt.tz_localize("UTC")
    if interval == "1M":
        end = begin + pd.DateOffset(months=1)
    elif interval in INTERVALS:
        end = begin + pd.Timedelta(milliseconds=interval_ms(interval))
    else:
        raise ValueError(f"unknown interval {interval!r}")
    frame.index = pd.DatetimeIndex(end, name="candle_end_time")
    return frame


def candles_to_dataframe(candles: Sequence[Candle]) -> pd.DataFrame:
    """Candles of one series as the seed-shaped DataFrame (see :func:`table_to_dataframe`).

    Raises ``ValueError`` when the candles mix intervals, since the index depends on the interval.
    """
    intervals = {c.interval for c in candles}
    if len(intervals) > 1:
        raise ValueError(f"candles of several intervals {sorted(intervals)}: convert one series at a time")
    return table_to_dataframe(candles_to_table(candles), intervals.pop() if intervals else "1m")
