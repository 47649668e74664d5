"""What a valid candle is, decided once: the parser refuses what the store could not hold, and the store
refuses what the parser would never let through. Pure: no I/O.

A candle is valid when

* its series names a market, a normalized symbol (``[A-Z0-9_]{1,32}``) and an interval of that market;
* its open time is an ``int`` on the interval's grid (:func:`~trio_klines.core.markets.floor_open_time`:
  multiples of the length since the epoch, Mondays for ``1w``, the 1st for ``1M``, and for ``3d`` our
  assumption, since Binance does not document it), from the epoch to the end of year 9999
  (:data:`MAX_OPEN_TIME`, so that period names have four digits);
* its trade count is an ``int`` in ``[0, MAX_COUNT]`` (an int64 column);
* its eight values are finite numbers in ``[0, MAX_VALUE]`` (float64 columns: a ``float``, or an ``int``
  in the int64 range, which converts exactly as pyarrow does it); for a store of exact numbers
  (``exact=True``) decimal strings of at most :data:`EXACT_WHOLE_DIGITS` digits before the dot and
  :data:`EXACT_FRACTION_DIGITS` after it (:data:`EXACT_VALUE`), what the exact parsers give;
* ``low <= open, close <= high`` and the taker-buy volumes are at most the volumes (exactly, for decimals).

The parser decodes with these bounds in msgspec's constraints and inlines the checks on its hot path;
the store calls :func:`candle_problem` per candle. Tests hold both to this module. What only the wire
can tell is the parser's alone: the close time within the interval, and a closed candle not closing
after the exchange's clock plus :data:`CLOCK_TOLERANCE`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from decimal import Decimal
from typing import Final, NamedTuple

from ..errors import ConfigError
from .decimals import VALUE_RE
from .markets import INTERVALS, floor_open_time, is_open_time, series
from .timefmt import iso_ms

__all__ = [
    "CLOCK_TOLERANCE",
    "EXACT_FRACTION_DIGITS",
    "EXACT_VALUE",
    "EXACT_WHOLE_DIGITS",
    "MAX_COUNT",
    "MAX_OPEN_TIME",
    "MAX_VALUE",
    "STORED_AHEAD_MS",
    "Refusal",
    "candle_problem",
    "describe",
    "key_problem",
    "open_time_problem",
    "order_problem",
    "partition",
    "series_problem",
]

#: Open times from the epoch to the end of year 9999 (ms), the store's range.
MAX_OPEN_TIME: Final = 253_402_300_800_000
#: Largest trade count: an int64 column.
MAX_COUNT: Final = 2**63 - 1
#: Largest price or volume; finite float64 (NaN fails every comparison, so ``0 <= x <= MAX_VALUE`` is false).
MAX_VALUE: Final = 1e300
#: An exact value's digits before and after the dot: the store's ``decimal128(30, 12)``. Binance sends at
#: most 8 after it in every capture of ../shared/realdata and up to 12 before (quote volumes); a USDⓈ-M
#: quote volume can carry pricePrecision + quantityPrecision digits after it, so 12 leaves room, and 18
#: before hold a month's volume of a coin priced in millionths. Not more: every digit of scale is stored,
#: and on the real captures scale 18 made the files 65 % larger than float64's, scale 12 a third.
EXACT_WHOLE_DIGITS: Final = 18
EXACT_FRACTION_DIGITS: Final = 12
#: An exact value the store holds (unanchored; ``^…$`` for Arrow's RE2): :data:`~trio_klines.core.decimals.VALUE_SHAPE`
#: within those digits, leading zeros and trailing zeros aside (they change nothing). One pattern for both,
#: so that a column is checked in one pass.
EXACT_VALUE: Final = (rf"(?:0*[0-9]{{1,{EXACT_WHOLE_DIGITS}}}(?:\.[0-9]{{0,{EXACT_FRACTION_DIGITS}}}0*)?"
                      rf"|\.[0-9]{{1,{EXACT_FRACTION_DIGITS}}}0*)")  # fmt: skip
_EXACT_VALUE: Final = re.compile(EXACT_VALUE)
#: How far (ms) a closed candle's close time may lie past the exchange's clock: a frame's event time ``E``
#: on the WebSocket, the ``/time`` answer on REST. ``E`` is stamped by the exchange itself after the close
#: (real closed frames carry ``E`` 5 ms to 2.4 s after ``T``), so no clock skew between machines enters;
#: one second covers Binance's own jitter between its kline engine and its stream stamps, and lets
#: through at most one ``1s`` candle early: nothing that could move a series' newest open time by more.
CLOCK_TOLERANCE: Final = 1_000
#: How far past the local clock a *stored* open time may be before it counts as beyond the clock (not a real
#: closed candle: an older version let it in): a day, so that a local clock somewhat wrong hides no real candle.
STORED_AHEAD_MS: Final = 24 * 3600 * 1000

_FIELDS: Final = (
    "market", "symbol", "interval", "open_time", "open", "high", "low", "close", "volume", "quote_volume",
    "trade_num", "taker_buy_base_asset_volume", "taker_buy_quote_asset_volume",
)  # fmt: skip
# Interval → (offset, length) of its grid; None for 1M, whose months the calendar decides.
_GRIDS: Final = {
    i: None if length is None else (floor_open_time(i, 0) % length, length) for i, length in INTERVALS.items()
}
# Series already validated → its grid, so that the store's per-candle check is a dict lookup (bounded).
_known: dict[tuple[str, str, str], tuple[int, int] | None] = {}
_KNOWN_LIMIT: Final = 100_000


class Refusal(NamedTuple):
    """A candle that is not valid, and why."""

    candle: object
    reason: str


def series_problem(market: object, symbol: object, interval: object) -> str | None:
    """Why ``(market, symbol, interval)`` is not a series of normalized names, or ``None``."""
    try:
        key = series(market, symbol, interval)  # type: ignore[arg-type]
    except ConfigError as exc:
        return str(exc)
    if key.symbol != symbol:
        return f"symbol {symbol!r} is not upper-case"
    if len(_known) < _KNOWN_LIMIT:
        _known[key] = _GRIDS[key.interval]
    return None


def open_time_problem(interval: str, open_time: object) -> str | None:
    """Why ``open_time`` (ms) cannot open a candle of ``interval`` (a valid interval), or ``None``."""
    if type(open_time) is not int:
        return f"open time {open_time!r} is not an integer"
    if not 0 <= open_time < MAX_OPEN_TIME:
        return f"open time {iso_ms(open_time)} is outside 1970-9999"
    grid = _GRIDS[interval]
    aligned = is_open_time(interval, open_time) if grid is None else (open_time - grid[0]) % grid[1] == 0
    return None if aligned else f"open time {iso_ms(open_time)} is not a {interval} boundary"


def _number_problem(name: str, x: object, limit: float) -> str | None:
    if type(x) is int:
        if not 0 <= x <= MAX_COUNT:
            return f"{name} {x} does not fit an int64 column"
    elif type(x) is not float:
        return f"{name} {x!r} is not a number"
    if not 0 <= x <= limit:  # type: ignore[operator]
        return f"{name} {x!r} is not a finite number in [0, {limit}]"
    return None


def order_problem(o: float, h: float, lo: float, c: float, v: float, q: float, bv: float, bq: float) -> str | None:
    """Why these values, each a number in range, are not one candle's (prices or volumes out of order)."""
    if not (lo <= o <= h and lo <= c <= h):
        return f"prices out of order: open {o}, high {h}, low {lo}, close {c}"
    if bv > v or bq > q:
        return f"taker-buy volumes {bv}/{bq} exceed the volumes {v}/{q}"
    return None


def candle_problem(candle: object, *, exact: bool = False) -> str | None:
    """Why ``candle`` is not a valid candle (see the module's docstring), or ``None``; with ``exact``, one
    for a store of exact numbers, whose values are decimal strings.

    Never raises, whatever ``candle`` holds. About 0.4 µs for a valid candle of a known series.
    """
    if exact:
        return _exact_problem(candle)
    try:
        c = candle
        o, h, lo, cl, v, q = c.open, c.high, c.low, c.close, c.volume, c.quote_volume  # type: ignore[attr-defined]
        bv, bq = c.taker_buy_base_asset_volume, c.taker_buy_quote_asset_volume  # type: ignore[attr-defined]
        t, n = c.open_time, c.trade_num  # type: ignore[attr-defined]
        grid = _known[(c.market, c.symbol, c.interval)]  # type: ignore[attr-defined]
        f = float
        if (
            grid is not None
            and type(o) is f and type(h) is f and type(lo) is f and type(cl) is f
            and type(v) is f and type(q) is f and type(bv) is f and type(bq) is f
            and 0.0 <= lo <= o <= h <= MAX_VALUE and lo <= cl <= h
            and 0.0 <= bv <= v <= MAX_VALUE and 0.0 <= bq <= q <= MAX_VALUE
            and type(n) is int and 0 <= n <= MAX_COUNT
            and type(t) is int and 0 <= t < MAX_OPEN_TIME and (t - grid[0]) % grid[1] == 0
        ):  # fmt: skip
            return None
    except (AttributeError, KeyError, TypeError, RecursionError):
        pass
    try:
        return _explain(candle)
    except RecursionError:  # a message quoting a value nested too deeply (repr recurses)
        return "a value nested too deeply to show"


def _explain(candle: object) -> str | None:
    """:func:`candle_problem` field by field: the reason, or ``None`` for a valid candle off the fast path."""
    try:
        m, s, i, t, o, h, lo, c, v, q, n, bv, bq = (getattr(candle, name) for name in _FIELDS)
    except AttributeError as exc:
        return f"not a candle: {exc}"
    problem = _key_problem(m, s, i, t, n)
    values = {"open": o, "high": h, "low": lo, "close": c, "volume": v, "quote volume": q,
              "taker-buy base volume": bv, "taker-buy quote volume": bq}  # fmt: skip
    for name, x in values.items():
        problem = problem or _number_problem(name, x, MAX_VALUE)
    return problem or order_problem(o, h, lo, c, v, q, bv, bq)


def key_problem(candle: object) -> str | None:
    """Why ``candle``'s series, open time or trade count are not a valid candle's (its values aside), or
    ``None``: the part of :func:`candle_problem` a store of exact numbers checks candle by candle, its
    values being checked as columns. Never raises; about 0.2 µs for a candle of a known series."""
    try:
        c = candle
        t, n = c.open_time, c.trade_num  # type: ignore[attr-defined]
        grid = _known[(c.market, c.symbol, c.interval)]  # type: ignore[attr-defined]
        if (
            grid is not None and type(n) is int and 0 <= n <= MAX_COUNT
            and type(t) is int and 0 <= t < MAX_OPEN_TIME and (t - grid[0]) % grid[1] == 0
        ):  # fmt: skip
            return None
    except (AttributeError, KeyError, TypeError):
        pass
    try:
        return _key_problem(*(getattr(candle, name) for name in _FIELDS[:4]), candle.trade_num)  # type: ignore[attr-defined]
    except AttributeError as exc:
        return f"not a candle: {exc}"
    except RecursionError:
        return "a value nested too deeply to show"


def _key_problem(m: object, s: object, i: object, t: object, n: object) -> str | None:
    problem = series_problem(m, s, i) or open_time_problem(i, t)  # type: ignore[arg-type]
    if problem is None and (type(n) is not int or not 0 <= n <= MAX_COUNT):
        problem = f"trade count {n!r} is not an integer in [0, 2**63)"
    return problem


def _exact_problem(candle: object) -> str | None:
    """:func:`candle_problem` of a store of exact numbers: decimal strings that fit, in order exactly.

    The order is compared as floats (rounding keeps it: a value below another never rounds above it), and
    only values whose floats tie are compared exactly, as :class:`~decimal.Decimal`.
    """
    try:
        m, s, i, t, o, h, lo, c, v, q, n, bv, bq = (getattr(candle, name) for name in _FIELDS)
    except AttributeError as exc:
        return f"not a candle: {exc}"
    try:
        problem = _key_problem(m, s, i, t, n)
    except RecursionError:
        return "a value nested too deeply to show"
    if problem is not None:
        return problem
    values = {"open": o, "high": h, "low": lo, "close": c, "volume": v, "quote volume": q,
              "taker-buy base volume": bv, "taker-buy quote volume": bq}  # fmt: skip
    for name, x in values.items():
        if type(x) is str and _EXACT_VALUE.fullmatch(x) is not None:
            continue
        if type(x) is not str or VALUE_RE.fullmatch(x) is None:
            shown = repr(x) if type(x) in (str, float, int) else f"a {type(x).__name__}"
            return f"{name} {shown} is not a decimal string (exact numbers)"
        return (f"{name} {x!r} has more than {EXACT_WHOLE_DIGITS} digits before the dot or "
                f"{EXACT_FRACTION_DIGITS} after it")  # fmt: skip
    pairs = ((lo, o), (o, h), (lo, c), (c, h), (bv, v), (bq, q))
    if all(_at_most(a, b) for a, b in pairs):
        return None
    return order_problem(*(Decimal(x) for x in (o, h, lo, c, v, q, bv, bq)))  # type: ignore[arg-type]


def _at_most(a: str, b: str) -> bool:
    fa, fb = float(a), float(b)
    return fa < fb or (fa == fb and (a == b or Decimal(a) <= Decimal(b)))


def describe(candle: object) -> str:
    """``repr(candle)`` for logs and messages, even of a candle holding values nested too deeply to show,
    followed by ``(opening <ISO-8601 UTC>)`` when its ``open_time`` is an ``int``: the repr shows epoch ms."""
    try:
        text = repr(candle)
    except RecursionError:
        text = f"a {type(candle).__name__} holding values nested too deeply to show"
    try:
        open_time = getattr(candle, "open_time", None)
    except Exception:  # any object may reach here: a property that fails just goes unsaid
        return text
    return f"{text} (opening {iso_ms(open_time)})" if type(open_time) is int else text


def partition(candles: Iterable[object]) -> tuple[list[object], list[Refusal]]:
    """``candles`` split into the valid ones and the refused ones with their reasons, each in order."""
    valid: list[object] = []
    refused: list[Refusal] = []
    for candle in candles:
        problem = candle_problem(candle)
        if problem is None:
            valid.append(candle)
        else:
            refused.append(Refusal(candle, problem))
    return valid, refused
